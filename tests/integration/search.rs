//! Lead search on both backends: ranking, filters, paging, reindexing on
//! every write, and agreement with the domain's definition of a hit (so the
//! two backends give the same answers to the same input).

use leadline_app::Services;
use leadline_domain::{
    CompanyName, Email, LeadId, LeadStatus, Metadata, MetadataFilter, PageLimit, PersonName, Phone,
    SearchField, SearchLeadsQuery, SearchText, Tag, Tags, TenantId, UpdateLeadRequest,
    search::{FUZZY, PREFIX, WORD, search_text},
};
use leadline_store::Store;
use serde_json::json;

use crate::support::{both_backends, lead_req, new_tenant, services};

both_backends!(
    words_rank_above_prefixes_above_typos,
    filters_combine_with_the_text,
    pages_follow_the_rank_without_gaps_or_repeats,
    every_write_reindexes_and_deleted_leads_are_not_found,
    hits_agree_with_the_domain_definition,
    duplicates_group_by_email_phone_and_name_at_a_company,
);

fn query(q: &str) -> SearchLeadsQuery {
    SearchLeadsQuery {
        text: SearchText::parse(q).unwrap(),
        status: None,
        assigned_agent_id: None,
        tag: None,
        created_after: None,
        created_before: None,
        updated_after: None,
        updated_before: None,
        metadata: None,
        limit: PageLimit::new(200).unwrap(),
        after: None,
    }
}

struct Person<'a> {
    first: &'a str,
    last: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    company: Option<&'a str>,
    tags: &'a [&'a str],
    metadata: serde_json::Value,
}

const fn person<'a>(first: &'a str, last: &'a str) -> Person<'a> {
    Person {
        first,
        last,
        email: None,
        phone: None,
        company: None,
        tags: &[],
        metadata: serde_json::Value::Null,
    }
}

async fn add(s: &Services, tenant: TenantId, p: Person<'_>) -> LeadId {
    let mut req = lead_req(p.first);
    req.first_name = PersonName::new(p.first).unwrap();
    req.last_name = PersonName::new(p.last).unwrap();
    req.email = p.email.map(|e| Email::parse(e).unwrap());
    req.phone = p.phone.map(|p| Phone::parse(p).unwrap());
    req.company = p.company.map(|c| CompanyName::new(c).unwrap());
    req.tags = Tags::parse(p.tags).unwrap();
    if !p.metadata.is_null() {
        req.metadata = Metadata::new(p.metadata).unwrap();
    }
    s.leads.create(tenant, &req).await.unwrap().id
}

async fn hits(s: &Services, tenant: TenantId, q: &SearchLeadsQuery) -> Vec<(LeadId, u32)> {
    let page = s.leads.search(tenant, q).await.unwrap();
    assert!(!page.has_more, "one page holds them all");
    page.items.iter().map(|h| (h.lead.id, h.score)).collect()
}

async fn words_rank_above_prefixes_above_typos(store: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let hopper = add(
        &s,
        t,
        Person {
            email: Some("grace.hopper@navy.example"),
            company: Some("US Navy"),
            ..person("Grace", "Hopper")
        },
    )
    .await;
    let kelly = add(&s, t, person("Grace", "Kelly")).await;
    let gray = add(&s, t, person("Gray", "Fox")).await;
    let asa = add(&s, t, person("Åsa", "Gräns")).await;
    add(&s, t, person("Ada", "Lovelace")).await;

    // Ties are newest first.
    assert_eq!(
        hits(&s, t, &query("grace")).await,
        [(kelly, WORD), (hopper, WORD)]
    );
    assert_eq!(
        hits(&s, t, &query("Grace")).await,
        hits(&s, t, &query("GRACE")).await
    );
    // Type-ahead: "gra" starts Grace, Gray and (folded) Gräns.
    assert_eq!(
        hits(&s, t, &query("gra")).await,
        [
            (asa, PREFIX),
            (gray, PREFIX),
            (kelly, PREFIX),
            (hopper, PREFIX)
        ]
    );
    assert_eq!(
        hits(&s, t, &query("grace hoper")).await,
        [(hopper, WORD + FUZZY)]
    );
    assert_eq!(
        hits(&s, t, &query("hopper@navy.exmaple")).await,
        [(hopper, 2 * WORD + FUZZY)]
    );
    assert_eq!(hits(&s, t, &query("asa grans")).await, [(asa, 2 * WORD)]);
    assert_eq!(hits(&s, t, &query("ÅSA")).await, [(asa, WORD)]);
    assert!(hits(&s, t, &query("grace lovelace")).await.is_empty());
    assert!(hits(&s, t, &query("zebra")).await.is_empty());

    let page = s.leads.search(t, &query("navy hopper")).await.unwrap();
    assert_eq!(
        page.items[0].matched,
        [
            SearchField::LastName,
            SearchField::Email,
            SearchField::Company
        ]
    );
}

async fn filters_combine_with_the_text(store: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let emea = add(
        &s,
        t,
        Person {
            tags: &["vip"],
            metadata: json!({"region": "emea", "seats": 10, "trial": true}),
            ..person("Grace", "North")
        },
    )
    .await;
    let apac = add(
        &s,
        t,
        Person {
            metadata: json!({"region": "apac", "seats": 10.0, "trial": false}),
            ..person("Grace", "South")
        },
    )
    .await;
    let lead = s.leads.get(t, apac).await.unwrap();
    s.leads
        .update(
            t,
            apac,
            &UpdateLeadRequest {
                expected_version: lead.version,
                status: Some(LeadStatus::Contacted),
                ..UpdateLeadRequest::default()
            },
        )
        .await
        .unwrap();

    let mut q = query("grace");
    q.status = Some(LeadStatus::Contacted);
    assert_eq!(hits(&s, t, &q).await, [(apac, WORD)]);

    let mut q = query("grace");
    q.tag = Some(Tag::parse("vip").unwrap());
    assert_eq!(hits(&s, t, &q).await, [(emea, WORD)]);

    for (filter, expected) in [
        (json!({"region": "emea"}), vec![emea]),
        (json!({"region": "EMEA"}), vec![]),
        (json!({"seats": 10}), vec![apac, emea]),
        (json!({"seats": 10.0}), vec![apac, emea]),
        (json!({"seats": "10"}), vec![]),
        (json!({"trial": false}), vec![apac]),
        (json!({"trial": true, "region": "emea"}), vec![emea]),
        (json!({"missing": null}), vec![]),
        (json!({}), vec![apac, emea]),
    ] {
        let mut q = query("grace");
        q.metadata = Some(MetadataFilter::new(filter.clone()).unwrap());
        let got: Vec<LeadId> = hits(&s, t, &q).await.into_iter().map(|h| h.0).collect();
        assert_eq!(got, expected, "metadata {filter}");
    }

    let created = s.leads.get(t, emea).await.unwrap().created_at;
    let mut q = query("grace");
    q.created_before = Some(created + chrono::Duration::microseconds(1));
    assert_eq!(hits(&s, t, &q).await, [(emea, WORD)]);
    let mut q = query("grace");
    q.updated_after = Some(s.leads.get(t, apac).await.unwrap().updated_at);
    assert_eq!(hits(&s, t, &q).await, [(apac, WORD)]);
}

async fn pages_follow_the_rank_without_gaps_or_repeats(store: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    for i in 0..7 {
        add(&s, t, person("Gram", &format!("Number{i}"))).await;
        add(&s, t, person("Grant", &format!("Gram{i}"))).await;
    }
    let whole = hits(&s, t, &query("gram")).await;
    assert_eq!(whole.len(), 14);
    assert!(whole.windows(2).all(|w| w[0].1 >= w[1].1), "{whole:?}");
    let mut paged = Vec::new();
    let mut q = query("gram");
    q.limit = PageLimit::new(3).unwrap();
    loop {
        let page = s.leads.search(t, &q).await.unwrap();
        paged.extend(page.items.iter().map(|h| (h.lead.id, h.score)));
        match page.items.last() {
            Some(last) if page.has_more => {
                q.after = Some(q.cursor_after(last));
            }
            _ => break,
        }
    }
    assert_eq!(paged, whole);
}

async fn every_write_reindexes_and_deleted_leads_are_not_found(store: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let id = add(&s, t, person("Marie", "Curie")).await;
    add(&s, other, person("Marie", "Curie")).await;
    assert_eq!(hits(&s, t, &query("curie")).await, [(id, WORD)]);

    let lead = s.leads.get(t, id).await.unwrap();
    s.leads
        .update(
            t,
            id,
            &UpdateLeadRequest {
                expected_version: lead.version,
                last_name: Some(PersonName::new("Skłodowska").unwrap()),
                phone: Some(Some(Phone::parse("+48 22 555 0100").unwrap())),
                ..UpdateLeadRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(
        hits(&s, t, &query("curie")).await.is_empty(),
        "old words go"
    );
    assert_eq!(
        hits(&s, t, &query("sklodowska")).await,
        [(id, WORD)],
        "new words come, folded"
    );
    let page = s.leads.search(t, &query("48225550100")).await.unwrap();
    assert_eq!(page.items[0].matched, [SearchField::Phone]);

    s.leads.delete(t, id).await.unwrap();
    assert!(hits(&s, t, &query("marie")).await.is_empty());
    s.leads.restore(t, id).await.unwrap();
    assert_eq!(hits(&s, t, &query("marie")).await, [(id, WORD)]);
}

/// Words drawn from the leads themselves, then cut short, misspelt or left
/// whole: every query's hits and their order must be exactly what the
/// domain's definition gives over the same leads.
async fn hits_agree_with_the_domain_definition(store: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let firsts = [
        "Grace", "Gracie", "Ada", "Adam", "Åsa", "Zoë", "Li", "Noor", "Hopper",
    ];
    let lasts = [
        "Hopper", "Lovelace", "Hooper", "Adams", "Gräns", "Nguyen", "O'Brien",
    ];
    let companies = [
        None,
        Some("Navy"),
        Some("Analytical Engines"),
        Some("Hop & Co"),
    ];
    // Addresses and numbers give words with digits, which PostgreSQL's
    // index keys whole (migration 32), and many words one prefix shares.
    let mut n = 0usize;
    for first in firsts {
        for last in lasts {
            n += 1;
            if n.is_multiple_of(3) {
                continue;
            }
            let email = format!("hopper{n}.x{}z@navy{}.example", n % 7, n % 2);
            let phone = format!("+1555{:07}", n * 7_919);
            add(
                &s,
                t,
                Person {
                    company: companies[n % companies.len()],
                    tags: if n.is_multiple_of(5) { &["hot"] } else { &[] },
                    email: (n % 4 == 1).then_some(email.as_str()),
                    phone: (n % 4 == 2).then_some(phone.as_str()),
                    ..person(first, last)
                },
            )
            .await;
        }
    }
    let all = {
        let mut leads = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .leads
                .list(
                    t,
                    &leadline_domain::ListLeadsQuery {
                        limit: PageLimit::new(200).unwrap(),
                        after,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            leads.extend(page.items.iter().cloned());
            if !page.has_more {
                break;
            }
            after = page.items.last().map(|l| l.id);
        }
        leads
    };
    let mut queries: Vec<String> = Vec::new();
    for word in [
        "grace", "hopper", "lovelace", "adams", "grans", "navy", "engines", "hot",
    ] {
        queries.push(word.to_owned());
        queries.push(word[..2].to_owned());
        queries.push(word[..word.len() - 1].to_owned());
        queries.push(word[1..].to_owned());
        let mut swapped: Vec<char> = word.chars().collect();
        swapped.swap(1, 2);
        queries.push(swapped.into_iter().collect());
    }
    queries.extend(
        [
            "grace hopper",
            "ada lovelace",
            "hoper",
            "gracie hooper",
            "o brien",
            "zoe",
            "li",
            "h",
            "hopp",
            "hopper1",
            "hopper13",
            "hopper13 x6z",
            "hopper4 navy1",
            "navy",
            "x1",
            "x1z grace",
            "1555",
            "1555006",
            "15550055",
            "grace 1555",
            "hopp 1555",
        ]
        .map(str::to_owned),
    );
    // The tenant's vocabulary: every word of its leads (none was edited).
    let texts: Vec<String> = all.iter().map(search_text).collect();
    let mut vocabulary: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split(' '))
        .filter(|w| !w.is_empty())
        .collect();
    vocabulary.sort_unstable();
    vocabulary.dedup();
    for q in &queries {
        let plan = SearchText::parse(q).unwrap().plan_over(&vocabulary);
        let mut expected: Vec<(LeadId, u32)> = all
            .iter()
            .zip(&texts)
            .filter_map(|(l, text)| plan.score(text).map(|score| (l.id, score)))
            .collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.as_uuid().cmp(&a.0.as_uuid())));
        assert_eq!(hits(&s, t, &query(q)).await, expected, "query {q:?}");
    }
}

/// Leads that exist before the search migrations are indexed by them:
/// revert every migration from the first search one on a populated
/// database, apply them again, and the leads are found by word and by typo
/// (the vocabulary is filled from the existing leads).
async fn the_search_migrations_index_existing_leads(store: Store, owner: Store) {
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let id = add(
        &s,
        t,
        Person {
            company: Some("Zuse KG"),
            ..person("Konrad", "Zuse")
        },
    )
    .await;
    owner
        .migrate(leadline_store::MigrateOp::Down {
            steps: crate::support::migrations_since("m20261205_000007_lead_search"),
        })
        .await
        .unwrap();
    owner.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    assert_eq!(hits(&s, t, &query("konrad zuse")).await, [(id, 2 * WORD)]);
    assert_eq!(hits(&s, t, &query("kg")).await, [(id, WORD)]);
    assert_eq!(
        hits(&s, t, &query("konrd zuse")).await,
        [(id, FUZZY + WORD)]
    );
}

#[tokio::test]
async fn the_search_migrations_index_existing_leads_on_sqlite() {
    let store = crate::support::sqlite_store().await;
    the_search_migrations_index_existing_leads(store.clone(), store).await;
}

#[tokio::test]
async fn the_search_migrations_index_existing_leads_on_postgres() {
    let (owner, service) = crate::support::isolated_pg("leadline_search_migrations").await;
    let owner = leadline_store::Store::connect_for_migrations(
        &owner,
        &leadline_store::StoreSettings::default(),
    )
    .await
    .unwrap();
    the_search_migrations_index_existing_leads(crate::support::store_at(&service).await, owner)
        .await;
}

async fn duplicates_group_by_email_phone_and_name_at_a_company(store: Store) {
    use leadline_domain::{DuplicateReason, DuplicatesCursor, DuplicatesQuery};
    let s = services(store);
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let mut ids = Vec::new();
    for (first, last, email, phone, company) in [
        ("Ann", "One", Some("ann@example.com"), None, None),
        ("Anne", "Uno", Some("ANN@example.com"), None, None),
        ("Bob", "Two", None, Some("+1 555 0100"), None),
        ("Robert", "Deux", None, Some("+15550100"), None),
        ("Grace", "Hopper", None, None, Some("US Navy")),
        ("grace", "HOPPER", None, None, Some("U.S. Navy")),
        ("Grace", "Hopper", None, None, None),
        ("Grace", "Hopper", None, None, None),
        ("Solo", "Lead", Some("solo@example.com"), None, None),
    ] {
        let mut req = lead_req(first);
        req.last_name = PersonName::new(last).unwrap();
        req.email = email.map(|e| Email::parse(e).unwrap());
        req.phone = phone.map(|p| Phone::parse(p).unwrap());
        req.company = company.map(|c| CompanyName::new(c).unwrap());
        ids.push(s.leads.create(t, &req).await.unwrap().id);
    }
    // Another tenant's lead with the same email groups with nothing here,
    // and a deleted lead is left out.
    let mut req = lead_req("Solo");
    req.email = Some(Email::parse("solo@example.com").unwrap());
    s.leads.create(other, &req).await.unwrap();
    let deleted = s.leads.create(t, &req).await.unwrap();
    s.leads.delete(t, deleted.id).await.unwrap();

    let all = s
        .leads
        .duplicates(t, &DuplicatesQuery::default())
        .await
        .unwrap();
    assert!(!all.has_more);
    let groups: Vec<(DuplicateReason, &str, u64, Vec<LeadId>)> = all
        .items
        .iter()
        .map(|g| {
            (
                g.reason,
                g.key.as_str(),
                g.count,
                g.leads.iter().map(|l| l.id).collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (
                DuplicateReason::Email,
                "ann@example.com",
                2,
                vec![ids[0], ids[1]]
            ),
            (DuplicateReason::Phone, "+15550100", 2, vec![ids[2], ids[3]]),
            (
                DuplicateReason::NameCompany,
                "gracehopper|usnavy",
                2,
                vec![ids[4], ids[5]]
            ),
        ]
    );
    // One group a page, through the cursor.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .leads
            .duplicates(
                t,
                &DuplicatesQuery {
                    limit: PageLimit::new(1).unwrap(),
                    after: after.clone(),
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|g| g.key.clone()));
        match page.items.last() {
            Some(g) if page.has_more => {
                after = Some(DuplicatesCursor {
                    reason: g.reason,
                    key: g.key.clone(),
                });
            }
            _ => break,
        }
    }
    assert_eq!(seen, ["ann@example.com", "+15550100", "gracehopper|usnavy"]);
}
