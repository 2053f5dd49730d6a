//! Schemas of what the API sends and accepts, for the OpenAPI document only.
//!
//! The domain's types stay free of adapter crates (no `utoipa` derive
//! there), so their wire form is described here: value types are schemas
//! built from the domain's own limits (`PersonName::MAX`, `LeadStatus::ALL`
//! …), entities are mirror structs named like the domain's. A mirror that
//! drifts from what the domain serialises is caught by the contract test in
//! `src/tests/openapi.rs`, which checks real responses against this document.
//!
//! Nothing here is ever constructed.
#![allow(
    dead_code,
    reason = "schema-only types: they describe the wire form and are never built"
)]

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use leadline_domain as domain;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{
            AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat,
            Type,
        },
    },
};
use uuid::Uuid;

/// Implements [`ToSchema`] for a schema-only type under the given name.
macro_rules! named {
    ($ty:ident) => {
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

/// Free text of the domain's bounded kinds: trimmed (names) or kept as sent
/// (message texts), never blank, at most `MAX` characters.
macro_rules! text {
    ($($(#[$doc:meta])* $name:ident => $domain:ty, $what:literal;)+) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(<$domain>::MAX))
                    .description(Some(concat!(
                        $what,
                        ": not blank, no control characters."
                    )))
                    .into()
            }
        }
        named!($name);
    )+};
}

text! {
    /// `leadline_domain::PersonName`.
    PersonName => domain::PersonName, "A person's first or last name, trimmed";
    /// `leadline_domain::DisplayName`.
    DisplayName => domain::DisplayName, "A display name, trimmed";
    /// `leadline_domain::CompanyName`.
    CompanyName => domain::CompanyName, "A company name, trimmed";
    /// `leadline_domain::Source`.
    Source => domain::Source, "Where a lead came from (\"webinar\", \"referral\" …), trimmed";
    /// `leadline_domain::Subject`.
    Subject => domain::Subject, "A message subject line";
    /// `leadline_domain::MessageBody`.
    MessageBody => domain::MessageBody, "A message; newlines and tabs are kept";
    /// `leadline_domain::RejectionReason`.
    RejectionReason => domain::RejectionReason, "Why an approval was rejected";
    /// `leadline_domain::EventContent`.
    EventContent => domain::EventContent, "What an event says (a message, a summary, a note)";
}

/// A string enum listing the domain's wire names.
macro_rules! wire_enum {
    ($($(#[$doc:meta])* $name:ident => $values:expr, $what:literal;)+) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some($values))
                    .description(Some($what))
                    .into()
            }
        }
        named!($name);
    )+};
}

/// Every agent role. The match has no wildcard, so a new role fails to
/// compile here instead of going undocumented.
fn agent_roles() -> Vec<&'static str> {
    use domain::AgentRole as R;
    let all = [R::Admin, R::Agent];
    for role in all {
        match role {
            R::Admin | R::Agent => {}
        }
    }
    all.iter().map(|r| r.as_str()).collect()
}

wire_enum! {
    /// `leadline_domain::AgentRole`.
    AgentRole => agent_roles(), "What an agent may do: admins manage the tenant, agents work leads.";
    /// `leadline_domain::LeadStatus`.
    LeadStatus => domain::LeadStatus::ALL.iter().map(|s| s.as_str()),
        "Where a lead stands. Moves: new → contacted | nurturing | lost; contacted → qualified | \
         nurturing | lost; qualified → won | nurturing | lost; nurturing → contacted | qualified | \
         lost; lost → nurturing. `won` is final; staying put is always allowed.";
    /// `leadline_domain::Channel`.
    Channel => domain::Channel::ALL.iter().map(|c| c.as_str()), "How a message reaches the lead.";
    /// `leadline_domain::ApprovalStatus`.
    ApprovalStatus => domain::ApprovalStatus::ALL.iter().map(|s| s.as_str()),
        "Where an approval stands: pending → approved → sent, pending → rejected (with a reason), \
         pending → cancelled. `sent`, `rejected` and `cancelled` are final.";
    /// `leadline_domain::EventKind`.
    EventKind => domain::EventKind::ALL.iter().map(|k| k.as_str()), "What happened.";
    /// `leadline_domain::Direction`.
    Direction => domain::Direction::ALL.iter().map(|d| d.as_str()), "Which way it went.";
    /// `leadline_domain::ChangeType`.
    ChangeType => domain::ChangeType::ALL.iter().map(|t| t.as_str()), "What happened: `{entity}.{what}`.";
    /// `leadline_domain::DeliveryStatus`.
    DeliveryStatus => domain::DeliveryStatus::ALL.iter().map(|d| d.as_str()),
        "Where a delivery stands: pending (waiting for its next attempt) → delivered, failed \
         (refused for good) or dead (out of attempts). Failed and dead deliveries can be retried.";
}

/// `leadline_domain::Unsubscribe`.
pub(crate) struct Unsubscribe;

impl PartialSchema for Unsubscribe {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(domain::Unsubscribe::MAX))
            .pattern(Some(
                "^([Mm][Aa][Ii][Ll][Tt][Oo]:|[Hh][Tt][Tt][Pp][Ss]://)[!-~]+$",
            ))
            .description(Some(
                "Where recipients unsubscribe: a `mailto:` address or an `https://` URL \
                 (printable ASCII; no spaces, commas, quotes or angle brackets).",
            ))
            .into()
    }
}
named!(Unsubscribe);

/// `leadline_domain::Email`.
pub(crate) struct Email;

impl PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(domain::Email::MAX))
            .description(Some(
                "An email address; lower-cased, so uniqueness checks are case-blind.",
            ))
            .into()
    }
}
named!(Email);

/// `leadline_domain::Phone`.
pub(crate) struct Phone;

impl PartialSchema for Phone {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A phone number: an optional leading `+` and 7 to 15 digits. Spaces, dots, \
                 dashes and parentheses are accepted on input and dropped.",
            ))
            .examples(["+44 20 7946 0958"])
            .into()
    }
}
named!(Phone);

/// `leadline_domain::Slug`.
pub(crate) struct Slug;

impl PartialSchema for Slug {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A URL-safe handle: lowercase letters, digits and single dashes, starting with \
                 a letter.",
            ))
            .into()
    }
}
named!(Slug);

/// `leadline_domain::Tag`.
pub(crate) struct Tag;

impl PartialSchema for Tag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(domain::Tag::MAX))
            .description(Some(
                "A label: letters, digits, `-`, `_` and `:`; lower-cased on input, so `VIP` and \
                 `vip` are one tag.",
            ))
            .into()
    }
}
named!(Tag);

/// `leadline_domain::Tags`.
pub(crate) struct Tags;

impl PartialSchema for Tags {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Tag::schema_ref())
            .max_items(Some(domain::Tags::MAX))
            .unique_items(true)
            .description(Some("A lead's tags: sorted and de-duplicated on input."))
            .into()
    }
}

impl ToSchema for Tags {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tags")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Tag::name().into(), Tag::schema()));
    }
}

/// `leadline_domain::Metadata`.
pub(crate) struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some(format!(
                "Free-form data: a JSON object of at most {} bytes, serialised.",
                domain::Metadata::MAX_BYTES
            )))
            .into()
    }
}
named!(Metadata);

/// `leadline_domain::PageLimit`: a query parameter.
pub(crate) struct PageLimit;

impl PartialSchema for PageLimit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(domain::PageLimit::MAX))
            .default(Some(domain::PageLimit::DEFAULT.get().into()))
            .description(Some("How many items a page may hold."))
            .into()
    }
}
named!(PageLimit);

/// A `$ref` to a named schema, for the manual impls above.
trait SchemaRef: ToSchema {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(Self::name()))
    }
}

impl<T: ToSchema> SchemaRef for T {}

/// `leadline_domain::Tenant`: the tenant an API key belongs to.
#[derive(ToSchema)]
pub(crate) struct Tenant {
    /// Its id; also the value of the row-level-security context.
    id: Uuid,
    /// Unique, URL-safe handle.
    slug: Slug,
    /// Human name.
    name: DisplayName,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// Whether the agent who drafted an approval is kept from approving or
    /// rejecting it (on unless an admin turns it off).
    separation_of_duties: bool,
}

/// `leadline_domain::Agent`: a person (or bot) who works leads.
#[derive(ToSchema)]
pub(crate) struct Agent {
    /// Its id.
    id: Uuid,
    /// Its tenant.
    tenant_id: Uuid,
    /// Display name.
    name: DisplayName,
    /// Email, unique within the tenant.
    email: Email,
    /// Role.
    role: AgentRole,
    /// Inactive agents keep their history but get no new leads.
    active: bool,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, starting at 1; also the `ETag`.
    version: i64,
}

/// `leadline_domain::Lead`: a person an outreach team works.
#[derive(ToSchema)]
pub(crate) struct Lead {
    /// Its id.
    id: Uuid,
    /// Its tenant.
    tenant_id: Uuid,
    /// First name.
    first_name: PersonName,
    /// Last name.
    last_name: PersonName,
    /// Email, if known.
    #[schema(required = true)]
    email: Option<Email>,
    /// Phone, if known.
    #[schema(required = true)]
    phone: Option<Phone>,
    /// Company, if known.
    #[schema(required = true)]
    company: Option<CompanyName>,
    /// Where it came from.
    #[schema(required = true)]
    source: Option<Source>,
    /// Lifecycle status.
    status: LeadStatus,
    /// The agent working it.
    #[schema(required = true)]
    assigned_agent_id: Option<Uuid>,
    /// Labels.
    tags: Tags,
    /// Free-form data.
    metadata: Metadata,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, starting at 1; also the `ETag`.
    version: i64,
}

/// `leadline_domain::SearchHit`: a lead a search found, and why.
#[derive(ToSchema)]
pub(crate) struct LeadHit {
    /// The lead.
    lead: Lead,
    /// Its rank: 3 per query word that equals a word of the lead, 2 per
    /// prefix, 1 per near miss.
    score: u32,
    /// The fields a query word matched in.
    matched: Vec<SearchField>,
    /// For each matched field, its text and the words that matched.
    highlights: Vec<Highlight>,
}

/// `leadline_domain::search::Highlight`: one field of a hit and the words a
/// search matched in it.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) struct Highlight {
    /// The field.
    field: SearchField,
    /// Its text, as stored (data, not markup: escape it to render it).
    text: String,
    /// `[start, end)` offsets, in Unicode code points, of each matched word.
    #[schema(value_type = Vec<Vec<u32>>)]
    marks: Vec<[u32; 2]>,
}

/// `leadline_domain::SearchField`: a field a search looks in.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) enum SearchField {
    FirstName,
    LastName,
    Email,
    Company,
    Phone,
    Tags,
}

/// `leadline_domain::Approval`: an outbound message awaiting, or past, a
/// person's decision.
#[derive(ToSchema)]
pub(crate) struct Approval {
    /// Its id.
    id: Uuid,
    /// Its tenant.
    tenant_id: Uuid,
    /// The lead it is addressed to.
    lead_id: Uuid,
    /// The channel.
    channel: Channel,
    /// Subject, for channels that have one.
    #[schema(required = true)]
    subject: Option<Subject>,
    /// The message.
    body: MessageBody,
    /// The agent who drafted it.
    requested_by: Uuid,
    /// Where it stands.
    status: ApprovalStatus,
    /// Who approved, rejected or cancelled it.
    #[schema(required = true)]
    decided_by: Option<Uuid>,
    /// When.
    #[schema(required = true)]
    decided_at: Option<DateTime<Utc>>,
    /// Why it was rejected.
    #[schema(required = true)]
    rejection_reason: Option<RejectionReason>,
    /// Who marked it sent.
    #[schema(required = true)]
    sent_by: Option<Uuid>,
    /// When it was sent.
    #[schema(required = true)]
    sent_at: Option<DateTime<Utc>>,
    /// Drafted at.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// The draft's text revision: 1 as drafted, one more per edit. Pass it
    /// to approve or reject to decide only on the text you read.
    #[schema(minimum = 1)]
    revision: i32,
    /// Who last edited the draft.
    #[schema(required = true)]
    edited_by: Option<Uuid>,
    /// When.
    #[schema(required = true)]
    edited_at: Option<DateTime<Utc>>,
}

/// `leadline_domain::Event`: one touch on a lead's timeline.
#[derive(ToSchema)]
pub(crate) struct Event {
    /// Its id.
    id: Uuid,
    /// Its tenant.
    tenant_id: Uuid,
    /// The lead.
    lead_id: Uuid,
    /// What happened.
    kind: EventKind,
    /// Which way.
    direction: Direction,
    /// What was said or noted.
    #[schema(required = true)]
    content: Option<EventContent>,
    /// When it happened (may be earlier than when it was recorded).
    occurred_at: DateTime<Utc>,
    /// The agent involved, if any.
    #[schema(required = true)]
    actor: Option<Uuid>,
    /// Free-form data.
    metadata: Metadata,
    /// When it was recorded.
    created_at: DateTime<Utc>,
}

/// `leadline_domain::Delivery`: one sent message on its way out.
#[derive(ToSchema)]
pub(crate) struct Delivery {
    /// Its id.
    id: Uuid,
    /// Its tenant.
    tenant_id: Uuid,
    /// The approval whose send it delivers.
    approval_id: Uuid,
    /// The lead it goes to.
    lead_id: Uuid,
    /// The channel.
    channel: Channel,
    /// Where it stands.
    status: DeliveryStatus,
    /// Attempts made so far.
    attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    #[schema(required = true)]
    next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    #[schema(required = true)]
    last_error: Option<String>,
    /// When the message was sent.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// When it was delivered or given up on.
    #[schema(required = true)]
    finished_at: Option<DateTime<Utc>>,
}

/// `leadline_domain::LoggedChange`: one change in a tenant's log.
#[derive(ToSchema)]
pub(crate) struct Change {
    /// Its id: its position in the log (`tx-seq`); the feed's
    /// `Last-Event-ID`.
    id: String,
    /// What happened, e.g. `lead.created`, `approval.sent`, `event.recorded`.
    #[schema(value_type = ChangeType)]
    r#type: String,
    /// `lead`, `agent`, `approval` or `event`.
    entity: String,
    /// The entity's id.
    entity_id: Uuid,
    /// When.
    at: DateTime<Utc>,
    /// The entity as the API shows it, right after the change.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `leadline_domain::SenderIdentity`: who a tenant's email comes from.
#[derive(ToSchema)]
pub(crate) struct SenderIdentity {
    /// The From address.
    from_email: Email,
    /// The From display name.
    #[schema(required = true)]
    from_name: Option<DisplayName>,
    /// Where replies go, when not the From address.
    #[schema(required = true)]
    reply_to: Option<Email>,
    /// Where recipients unsubscribe (default: the From address, subject
    /// "unsubscribe").
    #[schema(required = true)]
    unsubscribe: Option<Unsubscribe>,
}

/// `leadline_domain::LeadContext`: everything about a lead, in one read.
#[derive(ToSchema)]
pub(crate) struct LeadContext {
    /// The lead.
    lead: Lead,
    /// Its assigned agent, if any.
    #[schema(required = true)]
    assigned_agent: Option<Agent>,
    /// Approvals still waiting on someone (pending or approved), newest first.
    open_approvals: Vec<Approval>,
    /// The most recent closed approvals (sent, rejected, cancelled), newest first.
    recent_approvals: Vec<Approval>,
    /// The latest events, newest first.
    events: Vec<Event>,
}

/// A page of a list; see the `cursor` query parameter.
macro_rules! page {
    ($($(#[$doc:meta])* $name:ident of $item:ident;)+) => {$(
        $(#[$doc])*
        #[derive(ToSchema)]
        pub(crate) struct $name {
            /// This page's items.
            items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            #[schema(nullable = false)]
            next_cursor: Option<String>,
        }
    )+};
}

page! {
    /// A page of agents, oldest first.
    AgentPage of Agent;
    /// A page of leads, newest first.
    LeadPage of Lead;
    /// A page of search hits, best first.
    LeadHitPage of LeadHit;
    /// A page of approvals.
    ApprovalPage of Approval;
    /// A page of a lead's timeline, newest first.
    EventPage of Event;
    /// A page of deliveries, oldest first.
    DeliveryPage of Delivery;
}

/// `leadline_ports::TierStats`: counters of one cache tier, since start.
#[derive(ToSchema)]
pub(crate) struct TierStats {
    /// Lookups answered by this tier.
    hits: u64,
    /// Lookups this tier could not answer.
    misses: u64,
    /// Entries this tier dropped for size or age.
    evictions: u64,
    /// Calls to this tier that failed or timed out (a shared tier only).
    errors: u64,
}

/// `leadline_ports::CacheStats`: this instance's cache counters since start
/// (not per tenant: they reveal volumes, never keys or data).
#[derive(ToSchema)]
pub(crate) struct CacheStats {
    /// The in-process tier.
    l1: TierStats,
    /// The shared tier.
    l2: TierStats,
    /// Loader runs (misses in every tier that reached the store).
    loads: u64,
    /// Loader failures.
    load_errors: u64,
    /// Total time spent in loaders, in microseconds.
    load_time: u64,
    /// Contexts served stale because the store was unavailable.
    stale_served: u64,
    /// Invalidations this instance published.
    invalidations_sent: u64,
    /// Invalidations this instance received from others.
    invalidations_received: u64,
}

/// `leadline_app::PreloadReport`: what a preload did.
#[derive(ToSchema)]
pub(crate) struct PreloadReport {
    /// Contexts asked for.
    requested: u64,
    /// Contexts now cached.
    loaded: u64,
    /// Contexts that could not be loaded (gone, or the store failed).
    failed: u64,
    /// Whether the deadline cut the preload short.
    timed_out: bool,
    /// How long it took, in milliseconds.
    elapsed_ms: u64,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: the process is up.
    #[schema(example = "ok")]
    status: String,
}

/// An error (RFC 9457 problem details), sent as `application/problem+json`.
/// Extension members may follow, e.g. `current_status` on a conflicting
/// approval transition.
pub(crate) struct Problem;

impl PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        let text = |description: &'static str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An error (RFC 9457 problem details). Extension members may follow, e.g. \
                 `current_status` on a conflicting approval transition.",
            ))
            .property(
                "type",
                text("`urn:leadline:problem:<kind>`; match on this, not on `title`.")
                    .format(Some(SchemaFormat::Custom("uri".to_owned())))
                    .examples(["urn:leadline:problem:validation"]),
            )
            .required("type")
            .property("title", text("A short summary of the kind."))
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("The HTTP status code.")),
            )
            .required("status")
            .property("detail", text("What went wrong, for a person."))
            .required("detail")
            .property(
                "errors",
                ArrayBuilder::new()
                    .items(crate::error::FieldError::schema_ref())
                    .description(Some("The fields that failed; absent when none.")),
            )
            .property(
                "current_status",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "On a conflicting approval transition: where the approval stands.",
                    )),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for Problem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Problem")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use crate::error::FieldError;
        schemas.push((FieldError::name().into(), FieldError::schema()));
    }
}
