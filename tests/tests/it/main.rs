//! xcam's integration tests, as one binary (one link step against libtorch instead of one per
//! file). Each module holds one area; they share the harness in `xcam_tests`.
//!
//! Run through `make test`, which starts Redis and Postgres, builds
//! the binaries the tests start, and provisions schemathesis and Chromium.

mod access;
mod api_doc;
mod bounds;
mod chaos;
mod cli;
mod contract;
mod dashboard;
mod engine;
mod faults;
mod foundation;
mod hosts;
mod outages;
mod pipeline;
mod privacy;
mod router;
mod scale;
mod startup;
mod trust;
mod validation;
