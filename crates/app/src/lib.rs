//! leadline's application layer: use cases over the ports, and the
//! composition root.
//!
//! Services hold their ports as `Arc<dyn Port>`, so any adapter (or a
//! mockall mock in tests) plugs in without generics spreading through the
//! HTTP state. [`compose`] is the one place that names concrete adapters.

mod compose;
mod services;
mod workflow;

pub use compose::{ComposeError, Composition, compose, compose_with};
pub use services::{AgentService, CreatedTenant, LeadService, Services, TenantService};
pub use workflow::{
    AppendError, ApprovalService, ContextService, PreloadReport, RecallSettings, TimelineService,
};

#[cfg(test)]
mod tests;
