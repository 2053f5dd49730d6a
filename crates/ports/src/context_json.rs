//! [`ContextJson`]: a lead's context in its wire form.
//!
//! The context is read far more often than it changes, and every read used
//! to serialize the same value again (tens of microseconds for a context
//! with its events). So the cache keeps the JSON rather than the struct: it
//! renders once when a context is loaded (Redis needs those bytes anyway),
//! and the HTTP adapter sends the bytes as they are. The JSON is the serde
//! form of [`LeadContext`], the same document `GET /v1/leads/{id}/context`
//! has always returned.

use bytes::Bytes;
use leadline_domain::{LeadContext, LeadId, TenantId};

/// The JSON of one [`LeadContext`]. Only built by rendering a context or by
/// checking bytes that decode to one, so it always holds a valid context.
/// Cheap to clone (the bytes are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct ContextJson(Bytes);

/// Why bytes were not accepted as a context.
#[derive(Debug, thiserror::Error)]
pub enum ContextJsonError {
    /// The bytes are not a context of this release's shape.
    #[error("not a lead context: {0}")]
    Undecodable(#[from] serde_json::Error),
    /// A context, but of another lead or tenant than asked for.
    #[error("a context of another lead or tenant")]
    WrongKey,
    /// A context, but not byte for byte what this release renders (written
    /// by another release, with fields added, removed or renamed).
    #[error("a context in another release's format")]
    OtherFormat,
}

impl ContextJson {
    /// Renders `context`.
    ///
    /// # Errors
    /// Only if a value refuses to serialize, which the domain types never do.
    pub fn render(context: &LeadContext) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(context).map(|json| Self(Bytes::from(json)))
    }

    /// Accepts `bytes` from outside the process (the shared cache tier) once
    /// they decode as the context of `lead` in `tenant` and are exactly what
    /// this release would render for it, and keeps them unchanged.
    ///
    /// The tenant check makes a mis-keyed copy a miss rather than another
    /// tenant's data. The re-render check matters because the bytes are
    /// served as they are: during a rolling deploy Redis holds copies written
    /// by the other release, and serde would accept one with extra or missing
    /// optional fields. Such a copy is a miss, reloaded and overwritten.
    ///
    /// # Errors
    /// [`ContextJsonError`] when they do not.
    pub fn verify(bytes: Bytes, tenant: TenantId, lead: LeadId) -> Result<Self, ContextJsonError> {
        let context: LeadContext = serde_json::from_slice(&bytes)?;
        if context.lead.tenant_id != tenant || context.lead.id != lead {
            return Err(ContextJsonError::WrongKey);
        }
        if serde_json::to_vec(&context)? != bytes {
            return Err(ContextJsonError::OtherFormat);
        }
        Ok(Self(bytes))
    }

    /// The JSON.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a context renders to at least `{}`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes the context, for callers that need the values rather than
    /// the document.
    ///
    /// # Errors
    /// Never for a value built by [`ContextJson::render`] or
    /// [`ContextJson::verify`]; the `Result` is serde's.
    pub fn parse(&self) -> Result<LeadContext, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }
}

impl std::fmt::Debug for ContextJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contexts hold personal data: debug output gives the size only.
        f.debug_struct("ContextJson")
            .field("bytes", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use leadline_domain::{Lead, LeadStatus, Metadata, PersonName, Tags};

    fn context(tenant: TenantId, lead: LeadId) -> LeadContext {
        let now = Utc::now();
        LeadContext {
            lead: Lead {
                id: lead,
                tenant_id: tenant,
                first_name: PersonName::new("Grace").expect("valid"),
                last_name: PersonName::new("Hopper").expect("valid"),
                email: None,
                phone: None,
                company: None,
                source: None,
                status: LeadStatus::New,
                assigned_agent_id: None,
                tags: Tags::default(),
                metadata: Metadata::default(),
                created_at: now,
                updated_at: now,
                version: 1,
            },
            assigned_agent: None,
            open_approvals: Vec::new(),
            recent_approvals: Vec::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn renders_the_serde_form_and_parses_back() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let value = context(tenant, lead);
        let json = ContextJson::render(&value).expect("renders");
        assert_eq!(
            json.bytes().as_ref(),
            serde_json::to_vec(&value).expect("serializes").as_slice()
        );
        assert_eq!(json.parse().expect("parses"), value);
    }

    #[test]
    fn verify_keeps_the_bytes_of_the_asked_key_only() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let bytes = ContextJson::render(&context(tenant, lead))
            .expect("renders")
            .bytes()
            .clone();
        let kept = ContextJson::verify(bytes.clone(), tenant, lead).expect("accepted");
        assert_eq!(kept.bytes(), &bytes);
        assert!(matches!(
            ContextJson::verify(bytes.clone(), TenantId::new(), lead),
            Err(ContextJsonError::WrongKey)
        ));
        assert!(matches!(
            ContextJson::verify(bytes, tenant, LeadId::new()),
            Err(ContextJsonError::WrongKey)
        ));
        assert!(matches!(
            ContextJson::verify(Bytes::from_static(b"{\"lead\":1}"), tenant, lead),
            Err(ContextJsonError::Undecodable(_))
        ));
    }

    #[test]
    fn verify_refuses_another_release_format() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let mut document: serde_json::Value =
            serde_json::to_value(context(tenant, lead)).expect("serializes");
        // A field this release does not know: serde would ignore it, and the
        // copy would be served with it.
        document["lead"]["nickname"] = serde_json::json!("Amazing Grace");
        let extra = Bytes::from(serde_json::to_vec(&document).expect("serializes"));
        assert!(matches!(
            ContextJson::verify(extra, tenant, lead),
            Err(ContextJsonError::OtherFormat)
        ));
        // The same document with its keys in another order.
        let mut reordered = serde_json::Map::new();
        if let serde_json::Value::Object(fields) =
            serde_json::to_value(context(tenant, lead)).expect("serializes")
        {
            for (key, value) in fields.into_iter().rev() {
                reordered.insert(key, value);
            }
        }
        let reordered = Bytes::from(serde_json::to_vec(&reordered).expect("serializes"));
        assert!(ContextJson::verify(reordered, tenant, lead).is_err());
    }

    #[test]
    fn debug_shows_no_content() {
        let json = ContextJson::render(&context(TenantId::new(), LeadId::new())).expect("renders");
        let shown = format!("{json:?}");
        assert!(!shown.contains("Grace"), "{shown}");
        assert!(shown.contains(&json.len().to_string()), "{shown}");
    }
}
