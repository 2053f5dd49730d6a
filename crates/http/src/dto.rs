//! Request and response bodies. Request bodies deserialise straight into
//! the domain's validated types, so a bad value fails with its field's path;
//! `into_domain` then only assembles the request.

use leadline_domain::{
    AgentId, AgentRole, CompanyName, CreateAgentRequest, CreateLeadRequest, DisplayName, Email,
    LeadStatus, Metadata, PageLimit, PersonName, Phone, Source, Tag, Tags, UpdateAgentRequest,
    UpdateLeadRequest,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{error::ApiError, openapi::schema as s};

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`), so PATCH can clear optional fields.
pub(crate) fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAgentBody {
    /// Display name.
    #[schema(value_type = s::DisplayName)]
    name: DisplayName,
    /// Email, unique within the tenant (409 otherwise).
    #[schema(value_type = s::Email)]
    email: Email,
    /// Role; `agent` when absent.
    #[serde(default = "default_role")]
    #[schema(value_type = s::AgentRole)]
    role: AgentRole,
}

const fn default_role() -> AgentRole {
    AgentRole::Agent
}

impl CreateAgentBody {
    pub(crate) fn into_domain(self) -> CreateAgentRequest {
        CreateAgentRequest {
            name: self.name,
            email: self.email,
            role: self.role,
        }
    }
}

/// `PATCH /v1/agents/{id}`: absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateAgentBody {
    /// The version read; required unless `If-Match` is sent.
    version: Option<i64>,
    /// Display name.
    #[schema(value_type = Option<s::DisplayName>)]
    name: Option<DisplayName>,
    /// Email, unique within the tenant.
    #[schema(value_type = Option<s::Email>)]
    email: Option<Email>,
    /// Role.
    #[schema(value_type = Option<s::AgentRole>)]
    role: Option<AgentRole>,
    /// Inactive agents keep their history but get no new leads.
    active: Option<bool>,
}

impl UpdateAgentBody {
    pub(crate) fn version(&self) -> Option<i64> {
        self.version
    }

    pub(crate) fn into_domain(self, expected_version: i64) -> UpdateAgentRequest {
        UpdateAgentRequest {
            expected_version,
            name: self.name,
            email: self.email,
            role: self.role,
            active: self.active,
        }
    }
}

/// `POST /v1/leads`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateLeadBody {
    /// First name.
    #[schema(value_type = s::PersonName)]
    first_name: PersonName,
    /// Last name.
    #[schema(value_type = s::PersonName)]
    last_name: PersonName,
    /// Email.
    #[schema(value_type = Option<s::Email>)]
    email: Option<Email>,
    /// Phone.
    #[schema(value_type = Option<s::Phone>)]
    phone: Option<Phone>,
    /// Company.
    #[schema(value_type = Option<s::CompanyName>)]
    company: Option<CompanyName>,
    /// Where it came from.
    #[schema(value_type = Option<s::Source>)]
    source: Option<Source>,
    /// Lifecycle status; `new` when absent.
    #[serde(default = "default_status")]
    #[schema(value_type = s::LeadStatus)]
    status: LeadStatus,
    /// The agent working it (422 if there is no such agent).
    #[schema(value_type = Option<Uuid>)]
    assigned_agent_id: Option<AgentId>,
    /// Labels.
    #[serde(default)]
    #[schema(value_type = s::Tags)]
    tags: Tags,
    /// Free-form data.
    #[serde(default)]
    #[schema(value_type = s::Metadata)]
    metadata: Metadata,
}

const fn default_status() -> LeadStatus {
    LeadStatus::New
}

impl CreateLeadBody {
    pub(crate) fn into_domain(self) -> CreateLeadRequest {
        CreateLeadRequest {
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            source: self.source,
            status: self.status,
            assigned_agent_id: self.assigned_agent_id,
            tags: self.tags,
            metadata: self.metadata,
        }
    }
}

/// `PATCH /v1/leads/{id}`: absent fields stay, `null` clears optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateLeadBody {
    /// The version read; required unless `If-Match` is sent.
    version: Option<i64>,
    /// First name.
    #[schema(value_type = Option<s::PersonName>)]
    first_name: Option<PersonName>,
    /// Last name.
    #[schema(value_type = Option<s::PersonName>)]
    last_name: Option<PersonName>,
    /// Email; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<s::Email>)]
    email: Option<Option<Email>>,
    /// Phone; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<s::Phone>)]
    phone: Option<Option<Phone>>,
    /// Company; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<s::CompanyName>)]
    company: Option<Option<CompanyName>>,
    /// Where it came from; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<s::Source>)]
    source: Option<Option<Source>>,
    /// Lifecycle status: a move the lifecycle allows (409 otherwise).
    #[schema(value_type = Option<s::LeadStatus>)]
    status: Option<LeadStatus>,
    /// The agent working it; `null` unassigns.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    assigned_agent_id: Option<Option<AgentId>>,
    /// Labels: replaces them all.
    #[schema(value_type = Option<s::Tags>)]
    tags: Option<Tags>,
    /// Free-form data: replaces it whole.
    #[schema(value_type = Option<s::Metadata>)]
    metadata: Option<Metadata>,
}

impl UpdateLeadBody {
    pub(crate) fn version(&self) -> Option<i64> {
        self.version
    }

    pub(crate) fn into_domain(self, expected_version: i64) -> UpdateLeadRequest {
        UpdateLeadRequest {
            expected_version,
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            source: self.source,
            status: self.status,
            assigned_agent_id: self.assigned_agent_id,
            tags: self.tags,
            metadata: self.metadata,
        }
    }
}

/// Query of `GET /v1/leads`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListLeadsParams {
    /// Only leads in this status.
    #[param(value_type = Option<s::LeadStatus>)]
    pub status: Option<LeadStatus>,
    /// Only leads assigned to this agent.
    #[param(value_type = Option<Uuid>)]
    pub assigned_agent_id: Option<AgentId>,
    /// Only leads with this tag.
    #[param(value_type = Option<s::Tag>)]
    pub tag: Option<Tag>,
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Query of a plain keyset-paginated list (`GET /v1/agents`,
/// `/v1/webhooks`, `/v1/keys`, `/v1/users`): a page size and a cursor.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub(crate) fn page_limit(limit: Option<u32>) -> Result<PageLimit, ApiError> {
    limit.map_or(Ok(PageLimit::DEFAULT), |l| {
        PageLimit::new(l).map_err(|e| ApiError::invalid_field("limit", e.to_string()))
    })
}

/// A page of a list.
#[derive(Debug, Serialize)]
pub(crate) struct ListResponse<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_distinguishes_absent_from_null() {
        let body: UpdateLeadBody = serde_json::from_str(r#"{"company": null}"#).expect("valid");
        assert_eq!(body.company, Some(None));
        assert_eq!(body.email, None);
    }
}
