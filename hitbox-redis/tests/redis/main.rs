//! Tests of the Redis tier against real servers.
//!
//! They need the servers that `./scripts/test.sh` starts (through
//! `scripts/services.sh`), found through the `HITBOX_TEST_REDIS_*`
//! variables; without them every test fails and says so. Each test works
//! under a key prefix of its own, so the tests run in parallel and beside
//! other users of the same servers.

mod audit;
mod cluster;
mod cluster_failover;
mod cluster_reshard;
mod common;
mod distributed;
mod encrypted;
mod faults;
mod fills;
mod generations;
mod outage;
mod purge;
mod read_many;
mod sentinel;
mod standalone;
