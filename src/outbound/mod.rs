//! Outbound webhooks (issue #26): the mirror's change log delivered to services that cannot hold
//! a stream, signed the Standard Webhooks way. Built so far: the signing ([`sign`]) and the
//! policy on where a delivery may go ([`address`]); destinations, the fenced sender and its
//! admin API come next.

pub mod address;
pub mod sign;
