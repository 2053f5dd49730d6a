//! The cache against a real Redis (from leadline-testsupport: the shared
//! server, or a server a test owns when it stops and restarts Redis). Each
//! test uses fresh tenant ids, so tests sharing the server never collide.

mod cluster;
mod hot;
mod invalidation;
mod outage;
mod race;
mod rate;
mod replay;
mod sessions;
mod settings;
mod single_flight;
mod stale;
mod support;
mod tiers;
