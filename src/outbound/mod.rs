//! Outbound webhooks (issue #26): the mirror's change log delivered to services that cannot hold
//! a stream, signed the Standard Webhooks way. Built so far: what a delivery says ([`body`]),
//! the signing ([`sign`]), how a destination's secret is kept at rest ([`sealed`]), the policy on
//! where a delivery may go ([`address`]), one attempt ([`client`]) and what follows it
//! ([`outcome`]); destinations, the fenced sender and its admin API come next.

pub mod address;
pub mod body;
pub mod client;
pub mod outcome;
pub mod sealed;
pub mod sign;
