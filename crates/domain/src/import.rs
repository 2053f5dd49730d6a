//! Importing leads from a spreadsheet or a CRM's export: which column holds
//! what, and how one row becomes a lead (or the reasons it cannot).
//!
//! Headers are matched case- and punctuation-insensitively (`E-mail
//! Address`, `email_address` and `EMAIL ADDRESS` are one header) against the
//! column names of plain spreadsheets and of the contact/lead exports of
//! HubSpot, Salesforce and Pipedrive. An explicit mapping overrides the
//! guess; columns that map to nothing are kept in the lead's `metadata`
//! under their header, so nothing in the file is lost.
//!
//! A row is validated with the same value types as the API. A row that
//! fails is rejected whole, with each bad column and its reason; it never
//! half-writes.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    CompanyName, CreateLeadRequest, Email, Lead, LeadId, LeadStatus, Metadata, PersonName, Phone,
    Source, Tags, UpdateLeadRequest, ValueError,
};

/// Where a column's values go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `first_name`.
    FirstName,
    /// `last_name`.
    LastName,
    /// A full name, split at its last space into first and last name
    /// (used only when the row has no first/last name of its own).
    FullName,
    /// `email`.
    Email,
    /// `phone`.
    Phone,
    /// `company`.
    Company,
    /// `source`.
    Source,
    /// `status`: one of leadline's statuses, case-insensitively; any other
    /// value (a CRM's own status) is kept in metadata under the header.
    Status,
    /// The owning agent, by email.
    Owner,
    /// Tags, separated by `,`, `;` or `|`.
    Tags,
    /// `metadata[header]`.
    Metadata,
    /// A JSON object whose keys go into `metadata` (the `metadata` column
    /// of leadline's own export).
    MetadataObject,
    /// Dropped.
    Ignore,
}

impl Target {
    /// The target an explicit mapping names (`email`, `metadata`, `ignore`,
    /// …), case-insensitively.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        Ok(match key(raw).as_str() {
            "firstname" => Self::FirstName,
            "lastname" => Self::LastName,
            "name" | "fullname" => Self::FullName,
            "email" => Self::Email,
            "phone" => Self::Phone,
            "company" => Self::Company,
            "source" => Self::Source,
            "status" => Self::Status,
            "owner" | "assignedagent" | "agent" => Self::Owner,
            "tags" => Self::Tags,
            "metadata" => Self::Metadata,
            "metadatajson" => Self::MetadataObject,
            "ignore" | "skip" | "" => Self::Ignore,
            _ => {
                return Err(ValueError::Invalid(
                    "must be one of: first_name, last_name, name, email, phone, company, source, \
                     status, owner, tags, metadata, metadata_json, ignore",
                ));
            }
        })
    }
}

/// A header as matched: lower-cased letters and digits only.
#[must_use]
pub fn key(header: &str) -> String {
    crate::search::fold(header)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The header of the column with a rejected row's reasons, in the rejected
/// rows offered back as CSV.
pub const REJECT_REASONS_HEADER: &str = "leadline_errors";
/// Headers that start so (once matched as keys) are leadline's own and
/// never imported.
const RESERVED_PREFIX: &str = "leadline";

/// The field a known header names. Sources: plain spreadsheets; HubSpot's
/// contact export (`First Name`, `Email`, `Phone Number`, `Company Name`,
/// `Contact owner`, `Lead Status`, `Original Source`); Salesforce's lead
/// report (`First Name`, `Email`, `Phone`, `Mobile`, `Company / Account`,
/// `Lead Source`, `Lead Status`, `Lead Owner`); Pipedrive's people export
/// (`Person - Name`, `Person - Email - Work`, `Person - Phone - Work`,
/// `Person - Organization`, `Person - Owner`, `Person - Labels`).
fn guess(header_key: &str) -> Option<Target> {
    let t = match header_key {
        "firstname" | "first" | "givenname" | "forename" | "personfirstname"
        | "contactfirstname" => Target::FirstName,
        "lastname" | "last" | "surname" | "familyname" | "personlastname" | "contactlastname" => {
            Target::LastName
        }
        "name" | "fullname" | "contactname" | "personname" | "contact" | "leadname" => {
            Target::FullName
        }
        "email" | "emailaddress" | "email1" | "primaryemail" | "workemail" | "personemail"
        | "personemailwork" | "emailwork" | "contactemail" | "mail" => Target::Email,
        "phone" | "phonenumber" | "mobile" | "mobilephone" | "mobilephonenumber"
        | "personphone" | "personphonework" | "phonework" | "workphone" | "businessphone"
        | "telephone" | "tel" | "cell" => Target::Phone,
        "company" | "companyname" | "companyaccount" | "account" | "accountname"
        | "organization" | "organisation" | "organizationname" | "organisationname"
        | "personorganization" | "org" | "employer" => Target::Company,
        "source" | "leadsource" | "originalsource" | "personsource" => Target::Source,
        "status" | "leadstatus" => Target::Status,
        "owner" | "leadowner" | "contactowner" | "owneremail" | "personowner" | "assignedagent"
        | "agent" | "agentemail" => Target::Owner,
        "tags" | "tag" | "labels" | "label" | "personlabels" => Target::Tags,
        "metadata" => Target::MetadataObject,
        // What leadline adds to exports and to the rejected rows it hands
        // back (`leadline_id`, `leadline_errors`, …): a file re-imports
        // without them.
        k if k.starts_with(RESERVED_PREFIX) => Target::Ignore,
        _ => return None,
    };
    Some(t)
}

/// What each column of a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    headers: Vec<String>,
    targets: Vec<Target>,
}

impl ColumnMap {
    /// Maps `headers`: explicit `overrides` (header → target, matched like
    /// headers) first, then the known names; the first column to claim a
    /// field keeps it, later ones (and unknown headers) go to metadata.
    /// Empty headers are ignored.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] naming the problem when an override names a
    /// header the file does not have, or the file has no column for a name
    /// (`first_name`/`last_name`, or a full name).
    pub fn new(headers: &[String], overrides: &[(String, Target)]) -> Result<Self, MapError> {
        for (header, _) in overrides {
            if !headers.iter().any(|h| key(h) == key(header)) {
                return Err(MapError::UnknownHeader(header.clone()));
            }
        }
        let mut taken: Vec<Target> = Vec::new();
        let mut targets = Vec::with_capacity(headers.len());
        for header in headers {
            let k = key(header);
            let explicit = overrides
                .iter()
                .find(|(h, _)| key(h) == k)
                .map(|(_, t)| t.clone());
            let target = match explicit {
                Some(t) => t,
                None if k.is_empty() => Target::Ignore,
                None => match guess(&k) {
                    Some(t) if !taken.contains(&t) => t,
                    _ => Target::Metadata,
                },
            };
            if !matches!(target, Target::Metadata | Target::Ignore) {
                taken.push(target.clone());
            }
            targets.push(target);
        }
        let has = |t: &Target| taken.contains(t);
        if !(has(&Target::FullName) || has(&Target::FirstName) && has(&Target::LastName)) {
            return Err(MapError::NoName);
        }
        Ok(Self {
            headers: headers.to_vec(),
            targets,
        })
    }

    /// Each header with its target.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.headers.iter().map(String::as_str).zip(&self.targets)
    }

    /// Reads one record (its fields in column order) into a lead, or every
    /// reason it cannot be one. A record shorter than the header has
    /// empty values for the missing columns; extra fields past the header
    /// are an error.
    ///
    /// # Errors
    /// The list of bad columns with their reasons.
    pub fn read(&self, fields: &[String]) -> Result<ImportedLead, Vec<ColumnError>> {
        let mut errors = Vec::new();
        if fields.len() > self.headers.len() {
            errors.push(ColumnError {
                column: String::new(),
                reason: format!(
                    "has {} fields but the header has {} columns",
                    fields.len(),
                    self.headers.len()
                ),
            });
        }
        let mut row = RowBuilder::default();
        for (i, (header, target)) in self.columns().enumerate() {
            let raw = fields.get(i).map_or("", |f| f.trim());
            if raw.is_empty() || *target == Target::Ignore {
                continue;
            }
            if let Err(reason) = row.set(header, target, raw) {
                errors.push(ColumnError {
                    column: header.to_owned(),
                    reason,
                });
            }
        }
        match row.finish() {
            Ok(lead) if errors.is_empty() => Ok(lead),
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }
}

/// A mapping that cannot work for the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// An override names a header the file does not have.
    #[error("the file has no column {0:?}")]
    UnknownHeader(String),
    /// No column gives the lead's name.
    #[error(
        "no column for the name: the file needs first and last name columns (or one full-name column); map them with --map \"HEADER=first_name\""
    )]
    NoName,
}

/// One bad value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnError {
    /// The column's header (empty for the row as a whole).
    pub column: String,
    /// Why.
    pub reason: String,
}

/// A row read into a lead: the request, and the owner's email for the
/// caller to resolve to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedLead {
    /// The lead, unassigned.
    pub lead: CreateLeadRequest,
    /// The owning agent's email, if the row names one.
    pub owner: Option<Email>,
}

impl ImportedLead {
    /// The update that brings `lead` (the live lead with the row's email)
    /// up to this row under `--on-duplicate update`, at its version: the
    /// names, and every other field the row has a value for; tags are
    /// added and metadata keys merged; the status moves only where the
    /// lifecycle allows (a file older than the lead's progress leaves it). `None` when the lead already is as the row says, so
    /// re-importing an unchanged file changes nothing.
    ///
    /// # Errors
    /// The merged tags or metadata would break their limits (the reason,
    /// naming the field).
    pub fn update_for(&self, lead: &Lead) -> Result<Option<UpdateLeadRequest>, String> {
        let new = &self.lead;
        fn differs<T: Clone + PartialEq>(value: &Option<T>, current: &Option<T>) -> Option<T> {
            value
                .as_ref()
                .filter(|v| Some(*v) != current.as_ref())
                .cloned()
        }
        let mut tags: Vec<_> = lead.tags.as_slice().to_vec();
        tags.extend(new.tags.as_slice().iter().cloned());
        let tags = Tags::new(tags).map_err(|e| format!("tags: {e}"))?;
        let mut metadata = lead.metadata.as_map().clone();
        metadata.extend(new.metadata.as_map().clone());
        let metadata =
            Metadata::new(Value::Object(metadata)).map_err(|e| format!("metadata: {e}"))?;
        let req = UpdateLeadRequest {
            expected_version: lead.version,
            first_name: (new.first_name != lead.first_name).then(|| new.first_name.clone()),
            last_name: (new.last_name != lead.last_name).then(|| new.last_name.clone()),
            email: None,
            phone: differs(&new.phone, &lead.phone).map(Some),
            company: differs(&new.company, &lead.company).map(Some),
            source: differs(&new.source, &lead.source).map(Some),
            // Only forward, as the lifecycle allows: a file older than the
            // lead's progress does not undo it (nor fail the row).
            status: (new.status != lead.status
                && new.status != LeadStatus::New
                && lead.status.can_move_to(new.status))
            .then_some(new.status),
            assigned_agent_id: differs(&new.assigned_agent_id, &lead.assigned_agent_id).map(Some),
            tags: (tags != lead.tags).then_some(tags),
            metadata: (metadata != lead.metadata).then_some(metadata),
        };
        let unchanged = UpdateLeadRequest {
            expected_version: lead.version,
            ..UpdateLeadRequest::default()
        };
        Ok((req != unchanged).then_some(req))
    }
}

#[derive(Default)]
struct RowBuilder {
    first: Option<PersonName>,
    last: Option<PersonName>,
    /// A name column held a value that was refused (and reported): the
    /// name is then bad, not missing.
    name_refused: bool,
    full: Option<String>,
    full_header: String,
    email: Option<Email>,
    phone: Option<Phone>,
    company: Option<CompanyName>,
    source: Option<Source>,
    status: Option<LeadStatus>,
    owner: Option<Email>,
    tags: Vec<String>,
    tags_header: String,
    metadata: BTreeMap<String, Value>,
}

impl RowBuilder {
    fn set(&mut self, header: &str, target: &Target, raw: &str) -> Result<(), String> {
        let msg = |e: ValueError| e.to_string();
        match target {
            Target::FirstName | Target::LastName => {
                let name = PersonName::new(raw).map_err(|e| {
                    self.name_refused = true;
                    msg(e)
                })?;
                if *target == Target::FirstName {
                    self.first = Some(name);
                } else {
                    self.last = Some(name);
                }
            }
            Target::FullName => {
                self.full = Some(raw.to_owned());
                header.clone_into(&mut self.full_header);
            }
            Target::Email => self.email = Some(Email::parse(raw).map_err(msg)?),
            Target::Phone => self.phone = Some(Phone::parse(raw).map_err(msg)?),
            Target::Company => self.company = Some(CompanyName::new(raw).map_err(msg)?),
            Target::Source => self.source = Some(Source::new(raw).map_err(msg)?),
            Target::Status => match raw.to_lowercase().parse::<LeadStatus>() {
                Ok(status) => self.status = Some(status),
                // A CRM's own status ("Open Deal") is kept, not refused.
                Err(_) => {
                    self.metadata
                        .insert(header.to_owned(), Value::String(raw.to_owned()));
                }
            },
            Target::Owner => {
                self.owner =
                    Some(Email::parse(raw).map_err(|_| {
                        "must be the email of one of the tenant's agents".to_owned()
                    })?);
            }
            Target::Tags => {
                header.clone_into(&mut self.tags_header);
                self.tags.extend(
                    raw.split([',', ';', '|'])
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
            Target::Metadata => {
                self.metadata
                    .insert(header.to_owned(), Value::String(raw.to_owned()));
            }
            Target::MetadataObject => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(map)) => self.metadata.extend(map),
                _ => return Err("must be a JSON object".to_owned()),
            },
            Target::Ignore => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<ImportedLead, Vec<ColumnError>> {
        let mut errors = Vec::new();
        let (first, last) = match (self.first, self.last, self.full) {
            (Some(f), Some(l), _) => (Some(f), Some(l)),
            // Reported where the value was refused.
            _ if self.name_refused => (None, None),
            (f, l, Some(full)) if f.is_none() || l.is_none() => {
                let (split_first, split_last) = full
                    .trim()
                    .rsplit_once(char::is_whitespace)
                    .map_or((full.trim(), full.trim()), |(a, b)| (a.trim(), b.trim()));
                let parsed = |raw: &str| PersonName::new(raw);
                match (
                    f.map_or_else(|| parsed(split_first), Ok),
                    l.map_or_else(|| parsed(split_last), Ok),
                ) {
                    (Ok(f), Ok(l)) => (Some(f), Some(l)),
                    (Err(e), _) | (_, Err(e)) => {
                        errors.push(ColumnError {
                            column: self.full_header.clone(),
                            reason: e.to_string(),
                        });
                        (None, None)
                    }
                }
            }
            (f, l, _) => {
                if f.is_none() {
                    errors.push(ColumnError {
                        column: "first_name".to_owned(),
                        reason: "must not be empty".to_owned(),
                    });
                }
                if l.is_none() {
                    errors.push(ColumnError {
                        column: "last_name".to_owned(),
                        reason: "must not be empty".to_owned(),
                    });
                }
                (f, l)
            }
        };
        let tags = Tags::parse(&self.tags).map_err(|e| ColumnError {
            column: self.tags_header.clone(),
            reason: e.to_string(),
        });
        let metadata =
            Metadata::new(Value::Object(self.metadata.into_iter().collect())).map_err(|e| {
                ColumnError {
                    column: "metadata".to_owned(),
                    reason: e.to_string(),
                }
            });
        let tags = tags.map_err(|e| errors.push(e)).ok();
        let metadata = metadata.map_err(|e| errors.push(e)).ok();
        match (first, last, tags, metadata) {
            (Some(first_name), Some(last_name), Some(tags), Some(metadata))
                if errors.is_empty() =>
            {
                Ok(ImportedLead {
                    lead: CreateLeadRequest {
                        first_name,
                        last_name,
                        email: self.email,
                        phone: self.phone,
                        company: self.company,
                        source: self.source,
                        status: self.status.unwrap_or(LeadStatus::New),
                        assigned_agent_id: None,
                        tags,
                        metadata,
                    },
                    owner: self.owner,
                })
            }
            _ => Err(errors),
        }
    }
}

/// What to do with a row whose email is already a live lead's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// Leave the lead alone; count the row as skipped (the default).
    #[default]
    Skip,
    /// Overwrite the lead's fields with the row's non-empty values.
    Update,
    /// Create another lead anyway.
    Create,
}

impl OnDuplicate {
    /// Its name, as in `--on-duplicate`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Update => "update",
            Self::Create => "create",
        }
    }
}

impl std::str::FromStr for OnDuplicate {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "update" => Ok(Self::Update),
            "create" => Ok(Self::Create),
            _ => Err(ValueError::Invalid("must be one of: skip, update, create")),
        }
    }
}

/// Where an import run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStatus {
    /// Rows are being read; a run that was killed stays here and resumes
    /// when the same file is imported again.
    Running,
    /// Every row was read.
    Done,
    /// The file could not be read to its end (see the run's `failure`).
    Failed,
}

impl ImportStatus {
    /// Its name, as stored and shown.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for ImportStatus {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            _ => Err(ValueError::Invalid("must be one of: running, done, failed")),
        }
    }
}

/// What an import did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportCounts {
    /// Data rows read and committed (every row below is one of these).
    pub rows: u64,
    /// Leads created.
    pub created: u64,
    /// Existing leads updated (`--on-duplicate update`).
    pub updated: u64,
    /// Rows whose email was already a lead's (`skip`, the default).
    pub skipped: u64,
    /// Rows refused, each with its reasons.
    pub rejected: u64,
}

/// One import of one file into one tenant. Identified by the file's content
/// and the duplicate policy: importing the same file again continues (or,
/// once done, repeats nothing of) this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun {
    /// Its id.
    pub id: crate::ImportId,
    /// Its tenant.
    pub tenant_id: crate::TenantId,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// The file's name, as given.
    pub source_name: String,
    /// The file's header, to hand rejected rows back under it.
    pub headers: Vec<String>,
    /// The duplicate policy.
    pub on_duplicate: OnDuplicate,
    /// Where it stands.
    pub status: ImportStatus,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// What it did.
    pub counts: ImportCounts,
    /// The last line of the file whose row is committed: a resumed run
    /// starts after it.
    pub committed_line: u64,
    /// When it started.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its last progress.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// How long a running import may go without progress before it is shown
/// as stalled: its process most likely died (a batch commits every few
/// thousand rows, far more often than this on any upload worth running).
pub const STALL_AFTER: chrono::Duration = chrono::Duration::minutes(2);

impl ImportRun {
    /// Whether it is running but has made no progress for
    /// [`STALL_AFTER`]: the process reading it was most likely killed, and
    /// importing the same file again resumes it after `committed_line`.
    #[must_use]
    pub fn stalled(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.status == ImportStatus::Running && now - self.updated_at >= STALL_AFTER
    }
}

/// A row refused, as the import reports it and offers it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// Its line in the file (the first, for a quoted field spanning lines).
    pub line: u64,
    /// Every bad column with its reason.
    pub errors: Vec<ColumnError>,
    /// The row's fields, as read.
    pub fields: Vec<String>,
}

/// One batch of rows, committed together with the run's progress: either
/// all of it is written and the run moves past `to_line`, or none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportBatch {
    /// The runner writing it: one pass of an importer over the file.
    pub runner: uuid::Uuid,
    /// Whether it is its runner's first batch, which may take the run over
    /// from another runner (one that stopped, or one still running, which
    /// then stops at its next batch). A later batch moves the run only if
    /// its runner moved it last, so two runners of one file never continue
    /// each other's batches.
    pub claims: bool,
    /// The run's `committed_line` this batch continues from.
    pub from_line: u64,
    /// The last line this batch covers.
    pub to_line: u64,
    /// Leads to create, each with its line.
    pub creates: Vec<(u64, CreateLeadRequest)>,
    /// Rows read in this batch.
    pub rows: u64,
    /// Rows that updated a lead (already written), each with its line and
    /// the lead.
    pub updated: Vec<(u64, LeadId)>,
    /// Rows skipped as duplicates.
    pub skipped: u64,
    /// Rows refused.
    pub rejects: Vec<RejectedRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn crm_headers_map_whatever_their_case_and_punctuation() {
        let hubspot = strings(&[
            "First Name",
            "Last Name",
            "Email",
            "Phone Number",
            "Company Name",
            "Contact owner",
            "Lead Status",
            "Original Source",
            "Favourite Colour",
        ]);
        let map = ColumnMap::new(&hubspot, &[]).expect("maps");
        let targets: Vec<&Target> = map.columns().map(|(_, t)| t).collect();
        assert_eq!(
            targets,
            [
                &Target::FirstName,
                &Target::LastName,
                &Target::Email,
                &Target::Phone,
                &Target::Company,
                &Target::Owner,
                &Target::Status,
                &Target::Source,
                &Target::Metadata,
            ]
        );
        let pipedrive = strings(&[
            "Person - Name",
            "Person - Email - Work",
            "Person - Organization",
            "Person - Labels",
        ]);
        let map = ColumnMap::new(&pipedrive, &[]).expect("maps");
        let targets: Vec<&Target> = map.columns().map(|(_, t)| t).collect();
        assert_eq!(
            targets,
            [
                &Target::FullName,
                &Target::Email,
                &Target::Company,
                &Target::Tags
            ]
        );
        assert_eq!(key("E-mail Address"), key("EMAIL_ADDRESS"));
    }

    #[test]
    fn overrides_win_and_must_name_a_real_header() {
        let headers = strings(&["Vorname", "Nachname", "E-Mail"]);
        assert_eq!(ColumnMap::new(&headers, &[]), Err(MapError::NoName));
        let map = ColumnMap::new(
            &headers,
            &[
                ("vorname".to_owned(), Target::FirstName),
                ("Nachname".to_owned(), Target::LastName),
                ("e-mail".to_owned(), Target::Email),
            ],
        )
        .expect("maps");
        let lead = map
            .read(&strings(&["Jürgen", "Groß", "J@Example.COM"]))
            .expect("valid");
        assert_eq!(lead.lead.email.expect("email").to_string(), "j@example.com");
        assert!(matches!(
            ColumnMap::new(&headers, &[("Mail Address".to_owned(), Target::Email)]),
            Err(MapError::UnknownHeader(_))
        ));
    }

    #[test]
    fn a_row_becomes_a_lead_or_every_reason_it_cannot() {
        let headers = strings(&["Name", "Email", "Tags", "Status", "Region", "Owner"]);
        let map = ColumnMap::new(&headers, &[]).expect("maps");
        let ok = map
            .read(&strings(&[
                "Grace Brewster Hopper",
                "grace@navy.example",
                "VIP; navy",
                "Open Deal",
                "emea",
                "ada@acme.example",
            ]))
            .expect("valid");
        assert_eq!(ok.lead.first_name.to_string(), "Grace Brewster");
        assert_eq!(ok.lead.last_name.to_string(), "Hopper");
        assert_eq!(ok.lead.tags.as_slice().len(), 2);
        assert_eq!(ok.lead.status, LeadStatus::New);
        assert_eq!(
            ok.lead.metadata.as_map().get("Status"),
            Some(&Value::String("Open Deal".to_owned()))
        );
        assert_eq!(
            ok.lead
                .metadata
                .as_map()
                .get("Region")
                .and_then(Value::as_str),
            Some("emea")
        );
        assert_eq!(
            ok.owner.map(|o| o.to_string()).as_deref(),
            Some("ada@acme.example")
        );

        let bad = map
            .read(&strings(&[
                "Cher",
                "not-an-email",
                "bad tag!",
                "won",
                "",
                "nobody",
            ]))
            .expect_err("invalid");
        let columns: Vec<&str> = bad.iter().map(|e| e.column.as_str()).collect();
        assert_eq!(columns, ["Email", "Owner", "Tags"], "{bad:?}");

        let ragged = map
            .read(&strings(&["Ada Lovelace"]))
            .expect("short rows pad");
        assert_eq!(ragged.lead.first_name.to_string(), "Ada");
        assert!(
            map.read(&strings(&["A B", "", "", "", "", "", "extra"]))
                .is_err()
        );
        assert!(
            map.read(&strings(&["", "a@b.example"])).is_err(),
            "a name is required"
        );
    }

    #[test]
    fn a_refused_name_is_reported_once_as_refused_not_as_missing() {
        let headers = strings(&["First Name", "Last Name", "Full Name"]);
        let map = ColumnMap::new(&headers, &[]).expect("maps");
        let long = "x".repeat(500);
        let errors = map
            .read(&strings(&[&long, "Hopper", "Grace Hopper"]))
            .expect_err("a first name that long is refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].column, "First Name");
        assert!(!errors[0].reason.contains("empty"), "{errors:?}");
        // Missing (not refused) still says so, by the name field.
        let errors = map
            .read(&strings(&["", "Hopper", ""]))
            .expect_err("no first name");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].column.as_str(), errors[0].reason.as_str()),
            ("first_name", "must not be empty")
        );
    }

    #[test]
    fn an_update_from_a_row_changes_only_what_differs() {
        let map =
            ColumnMap::new(&strings(&["Name", "Company", "Tags", "Region"]), &[]).expect("maps");
        let row = map
            .read(&strings(&["Grace Hopper", "Navy", "vip", "emea"]))
            .expect("valid");
        let mut lead = crate::fixtures::lead_context(crate::TenantId::new(), LeadId::new()).lead;
        let update = row.update_for(&lead).expect("fits").expect("changes");
        assert_eq!(update.first_name, None, "same first name: untouched");
        assert_eq!(
            update
                .company
                .clone()
                .flatten()
                .map(|c| c.to_string())
                .as_deref(),
            Some("Navy")
        );
        assert_eq!(update.expected_version, lead.version);
        lead = lead.apply(&update, chrono::Utc::now()).expect("applies");
        assert_eq!(
            row.update_for(&lead),
            Ok(None),
            "the same row again changes nothing"
        );
        let renamed = map
            .read(&strings(&["Grace M. Hopper", "", "", ""]))
            .expect("valid");
        let update = renamed.update_for(&lead).expect("fits").expect("changes");
        assert!(update.first_name.is_some() && update.company.is_none() && update.tags.is_none());
        // A status the lead has moved past is left alone, not refused.
        let map = ColumnMap::new(&strings(&["Name", "Status"]), &[]).expect("maps");
        let contacted = map
            .read(&strings(&["Grace M. Hopper", "contacted"]))
            .expect("valid");
        lead.status = LeadStatus::Qualified;
        let update = contacted.update_for(&lead).expect("fits");
        assert_eq!(update.and_then(|u| u.status), None);
    }

    #[test]
    fn a_running_import_without_progress_is_stalled() {
        let now = chrono::Utc::now();
        let mut run = ImportRun {
            id: crate::ImportId::new(),
            tenant_id: crate::TenantId::new(),
            file_sha256: "ab".repeat(32),
            source_name: "x.csv".to_owned(),
            headers: Vec::new(),
            on_duplicate: OnDuplicate::Skip,
            status: ImportStatus::Running,
            failure: None,
            counts: ImportCounts::default(),
            committed_line: 1,
            created_at: now,
            updated_at: now - chrono::Duration::seconds(30),
        };
        assert!(!run.stalled(now), "recent progress");
        run.updated_at = now - STALL_AFTER;
        assert!(run.stalled(now));
        run.status = ImportStatus::Done;
        assert!(!run.stalled(now), "a finished run never stalls");
    }

    #[test]
    fn mapping_targets_and_duplicate_policies_parse() {
        assert_eq!(Target::parse("E-mail"), Ok(Target::Email));
        assert_eq!(Target::parse("first_name"), Ok(Target::FirstName));
        assert_eq!(Target::parse("ignore"), Ok(Target::Ignore));
        assert_eq!(Target::parse("metadata_json"), Ok(Target::MetadataObject));
        assert!(Target::parse("nonsense").is_err());
        assert_eq!("update".parse(), Ok(OnDuplicate::Update));
        assert!("merge".parse::<OnDuplicate>().is_err());
    }
}
