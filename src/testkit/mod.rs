//! Test support, compiled only for tests (`--features testkit`, which the crate's own
//! dev-dependency on itself turns on): generated models and network namespaces. Nothing here is
//! in the shipped binary.

pub mod models;
pub mod netns;
