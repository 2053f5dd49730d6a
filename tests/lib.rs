//! leadline's cross-crate integration tests live in `integration/` (one test
//! binary, a module per feature); this library is empty on purpose.
