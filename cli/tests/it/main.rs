//! The one integration-test binary (one link step). Every test talks to real
//! services on 127.0.0.1 started by scripts/test.sh; a missing service is a
//! loud failure, never a skip.

mod at_rest;
mod audit;
mod batch;
mod catalog;
mod cli;
mod cluster;
mod governance;
mod lineage;
mod kafka_sasl;
mod roles;
mod serve;
mod stream;
mod s3;
mod support;
mod tls;
mod up;
mod upkeep;
