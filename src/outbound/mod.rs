//! Outbound webhooks (issue #26): the mirror's change log delivered to services that cannot hold
//! a stream, signed the Standard Webhooks way. Destinations and their attempts live in
//! PostgreSQL ([`destinations`]); the fenced sender on the applier lock's holder delivers each
//! destination's selection in lanes ([`sender`]). The parts: what a delivery says ([`body`]),
//! which raw Clerk events may be selected ([`events`]), the signing ([`sign`]), how a secret is
//! kept at rest ([`sealed`]), where a delivery may go ([`address`]), one attempt ([`client`]) and
//! what follows it ([`outcome`]).

pub mod address;
pub mod body;
pub mod client;
pub mod destinations;
pub mod events;
pub mod outcome;
pub mod sealed;
pub mod sender;
pub mod sign;
