//! Pure generators for `cargo xtask db seed`: deterministic tenant ids and
//! realistic agents and leads. No I/O happens here, so the tests below check
//! the generators directly.
//!
//! Everything a seed tenant produces is a function of its slug and a row
//! number. The tenant id is derived from the slug because, under PostgreSQL
//! row-level security, a tenant can only be read back by id: deriving it is
//! what lets a second run find the tenants of the first. Each lead gets its
//! own RNG seeded from (slug, lead number), so lead #2600 is the same whether
//! it was written in one run of 3000 or in a top-up from 2500 to 3000.

use anyhow::{Context, anyhow};
use fake::{
    Fake,
    faker::{
        company::en::CompanyName as FakeCompany,
        internet::en::FreeEmailProvider,
        name::en::{FirstName, LastName},
    },
};
use leadline_domain::{
    AgentId, AgentRole, CompanyName, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest,
    DisplayName, Email, LeadStatus, Metadata, PersonName, Phone, Slug, Source, Tags, TenantId,
    ValueError,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sha2::{Digest, Sha256};

/// Every seed tenant's slug starts with this, so seed data is easy to spot.
pub const SLUG_PREFIX: &str = "seed-";

/// Salts the id derivation, so a seed tenant's id cannot collide with an id
/// derived the same way for some other purpose.
const ID_SALT: &str = "leadline-seed:";

/// Lead sources, as a CRM import would label them.
const SOURCES: [&str; 6] = [
    "webinar",
    "referral",
    "linkedin",
    "website",
    "csv-import",
    "event",
];

/// Tags a sales team might use.
const TAGS: [&str; 8] = [
    "vip",
    "b2b",
    "enterprise",
    "smb",
    "warm",
    "cold",
    "q4",
    "partner",
];

/// Sales regions for the metadata.
const REGIONS: [&str; 3] = ["emea", "amer", "apac"];

/// Top-level domains for company email domains.
const TLDS: [&str; 5] = ["com", "io", "co", "net", "org"];

/// Status weights (percent): a real pipeline is mostly leads nobody has
/// reached yet, thinning out towards won.
const STATUS_WEIGHTS: [(LeadStatus, u32); 6] = [
    (LeadStatus::New, 35),
    (LeadStatus::Contacted, 25),
    (LeadStatus::Qualified, 12),
    (LeadStatus::Nurturing, 12),
    (LeadStatus::Won, 6),
    (LeadStatus::Lost, 10),
];

/// One seed tenant: its slug, its derived id and the digest every row's RNG
/// is seeded from.
#[derive(Debug, Clone)]
pub struct SeedTenant {
    slug: Slug,
    id: TenantId,
    digest: [u8; 32],
}

impl SeedTenant {
    /// The `n`th seed tenant (1-based): slug `seed-001`, `seed-002`, …
    ///
    /// # Errors
    /// Only if the slug format were broken, which is a bug.
    pub fn numbered(n: u32) -> anyhow::Result<Self> {
        let slug = Slug::parse(&format!("{SLUG_PREFIX}{n:03}"))
            .map_err(|e| anyhow!("seed slug for tenant {n}: {e}"))?;
        Ok(Self::from_slug(slug))
    }

    /// The seed tenant for `slug`; its id is a UUID v8 over the first 16
    /// bytes of SHA-256(`leadline-seed:` + slug).
    #[must_use]
    pub fn from_slug(slug: Slug) -> Self {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(ID_SALT)
            .chain_update(slug.as_str())
            .finalize()
            .into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // v8 ("custom"): the version and variant bits are set, the rest is
        // the digest. These ids are not time-ordered like the v7 ids the
        // domain mints, which only matters for the order tenants list in.
        let id = TenantId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid());
        Self { slug, id, digest }
    }

    /// The slug.
    #[must_use]
    pub fn slug(&self) -> &Slug {
        &self.slug
    }

    /// The derived id.
    #[must_use]
    pub fn id(&self) -> TenantId {
        self.id
    }

    /// An RNG for one row: a separate stream per purpose and row number, so
    /// adding a field to one generator does not reshuffle the others.
    fn rng(&self, purpose: &str, row: u64) -> StdRng {
        let seed: [u8; 32] = Sha256::new()
            .chain_update(self.digest)
            .chain_update(purpose)
            .chain_update(row.to_le_bytes())
            .finalize()
            .into();
        StdRng::from_seed(seed)
    }

    /// The request that creates this tenant: a company-like display name.
    ///
    /// # Errors
    /// A generated value the domain refuses (a generator bug).
    pub fn create_request(&self) -> anyhow::Result<CreateTenantRequest> {
        let company: String = FakeCompany().fake_with_rng(&mut self.rng("tenant", 0));
        let name = checked(
            "tenant name",
            DisplayName::new(&format!("{company} (seed)")),
        )?;
        Ok(CreateTenantRequest {
            slug: self.slug.clone(),
            name,
        })
    }

    /// The email of agent `n` (1-based): `agent-01@seed-001.example`.
    ///
    /// # Errors
    /// As [`SeedTenant::create_request`].
    pub fn agent_email(&self, n: u32) -> anyhow::Result<Email> {
        checked(
            "agent email",
            Email::parse(&format!("agent-{n:02}@{}.example", self.slug)),
        )
    }

    /// Agent `n` (1-based). The first is the tenant's admin.
    ///
    /// # Errors
    /// As [`SeedTenant::create_request`].
    pub fn agent(&self, n: u32) -> anyhow::Result<CreateAgentRequest> {
        let mut rng = self.rng("agent", u64::from(n));
        let first: String = FirstName().fake_with_rng(&mut rng);
        let last: String = LastName().fake_with_rng(&mut rng);
        Ok(CreateAgentRequest {
            name: checked("agent name", DisplayName::new(&format!("{first} {last}")))?,
            email: self.agent_email(n)?,
            role: if n == 1 {
                AgentRole::Admin
            } else {
                AgentRole::Agent
            },
        })
    }

    /// Lead number `row` (0-based within the tenant), assigned at random to
    /// one of `agents` or to nobody.
    ///
    /// # Errors
    /// As [`SeedTenant::create_request`].
    pub fn lead(&self, row: u64, agents: &[AgentId]) -> anyhow::Result<CreateLeadRequest> {
        let mut rng = self.rng("lead", row);
        let first: String = FirstName().fake_with_rng(&mut rng);
        let last: String = LastName().fake_with_rng(&mut rng);
        let company: Option<String> = rng
            .random_bool(0.85)
            .then(|| FakeCompany().fake_with_rng(&mut rng));

        let email = if rng.random_bool(0.9) {
            // Work address at the company's domain when there is one,
            // otherwise a free mailbox; the row number keeps it unique.
            let domain = match company.as_deref().map(ascii_word).filter(|w| !w.is_empty()) {
                Some(word) => format!("{}.{}", truncate(&word, 24), pick(&TLDS, &mut rng)?),
                None => FreeEmailProvider().fake_with_rng(&mut rng),
            };
            let local = format!(
                "{}.{}{}",
                truncate(&ascii_word(&first), 20),
                truncate(&ascii_word(&last), 20),
                row + 1
            );
            Some(checked(
                "lead email",
                Email::parse(&format!("{local}@{domain}")),
            )?)
        } else {
            None
        };
        let phone = if rng.random_bool(0.7) {
            // 555 numbers are reserved for fiction in the North American plan.
            Some(checked(
                "lead phone",
                Phone::parse(&format!("+1555{:07}", rng.random_range(0..10_000_000u32))),
            )?)
        } else {
            None
        };
        let source = if rng.random_bool(0.9) {
            Some(checked(
                "lead source",
                Source::new(pick(&SOURCES, &mut rng)?),
            )?)
        } else {
            None
        };
        let status = weighted_status(&mut rng);
        let assigned_agent_id = if rng.random_bool(0.8) {
            agents.choose(&mut rng).copied()
        } else {
            None
        };
        let tag_count = rng.random_range(0..=3);
        let tags: Vec<&str> = TAGS.choose_multiple(&mut rng, tag_count).copied().collect();
        let metadata = serde_json::json!({
            "score": rng.random_range(0..=100u32),
            "region": pick(&REGIONS, &mut rng)?,
            "seed_row": row,
        });

        Ok(CreateLeadRequest {
            first_name: checked("lead first name", PersonName::new(&first))?,
            last_name: checked("lead last name", PersonName::new(&last))?,
            email,
            phone,
            company: company
                .map(|c| checked("lead company", CompanyName::new(&c)))
                .transpose()?,
            source,
            status,
            assigned_agent_id,
            tags: checked("lead tags", Tags::parse(&tags))?,
            metadata: checked("lead metadata", Metadata::new(metadata))?,
        })
    }
}

/// A domain refusal here means the generator produced something invalid:
/// report which value, rather than panicking mid-seed.
fn checked<T>(what: &str, result: Result<T, ValueError>) -> anyhow::Result<T> {
    result.with_context(|| format!("seed generator bug: invalid {what}"))
}

fn pick<'a>(choices: &[&'a str], rng: &mut StdRng) -> anyhow::Result<&'a str> {
    choices
        .choose(rng)
        .copied()
        .context("seed generator bug: empty choice list")
}

fn weighted_status(rng: &mut StdRng) -> LeadStatus {
    let total: u32 = STATUS_WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (status, weight) in STATUS_WEIGHTS {
        if roll < weight {
            return status;
        }
        roll -= weight;
    }
    LeadStatus::New
}

/// Lower-case ASCII letters and digits only: fake names carry apostrophes
/// and spaces ("O'Keefe", "Smith and Sons") that do not belong in an address.
fn ascii_word(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn truncate(word: &str, max: usize) -> &str {
    // `word` is ASCII (from `ascii_word`), so any byte index is a boundary.
    &word[..word.len().min(max)]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tenant_ids_are_stable_and_distinct() {
        let one = SeedTenant::numbered(1).expect("valid slug");
        assert_eq!(one.slug().as_str(), "seed-001");
        assert_eq!(
            one.id(),
            SeedTenant::numbered(1).expect("valid slug").id(),
            "same slug, same id"
        );
        // Pinned (= sha256("leadline-seed:seed-001") with the v8 bits set):
        // changing the derivation would orphan every seeded database.
        assert_eq!(one.id().to_string(), "8c430523-0025-817f-901b-45ec308a9cd8");
        assert_eq!(one.id().as_uuid().get_version_num(), 8);

        let ids: HashSet<TenantId> = (1..=50)
            .map(|n| SeedTenant::numbered(n).expect("valid slug").id())
            .collect();
        assert_eq!(ids.len(), 50, "every slug gets its own id");
    }

    #[test]
    fn agents_are_numbered_with_one_admin() {
        let tenant = SeedTenant::numbered(2).expect("valid slug");
        let first = tenant.agent(1).expect("valid agent");
        let second = tenant.agent(2).expect("valid agent");
        assert_eq!(first.email.as_str(), "agent-01@seed-002.example");
        assert_eq!(
            (first.role, second.role),
            (AgentRole::Admin, AgentRole::Agent)
        );
        assert_eq!(
            tenant.agent(2).expect("valid agent"),
            second,
            "reproducible"
        );
    }

    #[test]
    fn generated_leads_are_valid_varied_and_reproducible() {
        let tenant = SeedTenant::numbered(3).expect("valid slug");
        let agents: Vec<AgentId> = (0..5).map(|_| AgentId::new()).collect();
        let leads: Vec<CreateLeadRequest> = (0..2_000)
            .map(|row| tenant.lead(row, &agents))
            .collect::<anyhow::Result<_>>()
            .expect("the generator only makes valid leads");

        assert_eq!(
            tenant.lead(1234, &agents).expect("valid"),
            leads[1234],
            "a row is a function of (slug, row)"
        );
        assert_ne!(leads[0], leads[1]);

        let emails: HashSet<&str> = leads
            .iter()
            .filter_map(|l| l.email.as_ref().map(Email::as_str))
            .collect();
        let with_email = leads.iter().filter(|l| l.email.is_some()).count();
        assert_eq!(
            emails.len(),
            with_email,
            "emails are unique within a tenant"
        );
        assert!(with_email > 1_600, "most leads have an email: {with_email}");

        for lead in &leads {
            if let Some(phone) = &lead.phone {
                assert!(
                    phone.as_str().starts_with("+1555") && phone.as_str().len() == 12,
                    "{phone:?}"
                );
            }
            if let Some(agent) = lead.assigned_agent_id {
                assert!(agents.contains(&agent));
            }
            assert!(lead.tags.as_slice().len() <= 3);
            let score = lead
                .metadata
                .as_map()
                .get("score")
                .and_then(serde_json::Value::as_u64);
            assert!(score.is_some_and(|s| s <= 100), "{:?}", lead.metadata);
        }

        let count = |s: LeadStatus| leads.iter().filter(|l| l.status == s).count();
        assert!(
            count(LeadStatus::New) > count(LeadStatus::Qualified),
            "weighted toward new"
        );
        assert!(
            LeadStatus::ALL.iter().all(|&s| count(s) > 0),
            "every status appears"
        );
        assert!(
            leads.iter().any(|l| l.assigned_agent_id.is_none()),
            "some leads are unassigned"
        );
    }

    #[test]
    fn no_agents_means_no_assignment() {
        let tenant = SeedTenant::numbered(4).expect("valid slug");
        assert!((0..200).all(|row| {
            tenant
                .lead(row, &[])
                .is_ok_and(|l| l.assigned_agent_id.is_none())
        }));
    }
}
