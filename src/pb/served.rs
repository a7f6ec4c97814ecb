//! What the server sends for `DirectoryService`'s gets and lookups: the same messages as the
//! generated ones (same fields, same tags, the same bytes on the wire), except that the entity
//! is an [`Encoded`] one, so a response embeds the read cache's bytes instead of re-encoding a
//! copy of the message. `build.rs` generates `DirectoryService`'s server with these as its
//! responses (the rest are the generated `pb` types); clients use the generated ones.

use super::Encoded;
use super::{Invitation, Membership, Organization, Role, User};

// Each mirrors the message of the same name in proto/clerkmirror/v1/directory.proto; a test
// checks that every one encodes exactly as its generated twin.

/// `GetUserResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetUserResponse {
    #[prost(message, optional, tag = "1")]
    pub user: Option<Encoded<User>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `GetOrganizationResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOrganizationResponse {
    #[prost(message, optional, tag = "1")]
    pub organization: Option<Encoded<Organization>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `GetMembershipResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetMembershipResponse {
    #[prost(message, optional, tag = "1")]
    pub membership: Option<Encoded<Membership>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `BatchGetUsersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetUsersResponse {
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<Encoded<User>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `BatchGetOrganizationsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetOrganizationsResponse {
    #[prost(message, repeated, tag = "1")]
    pub organizations: Vec<Encoded<Organization>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `LookupUserResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupUserResponse {
    #[prost(message, optional, tag = "1")]
    pub user: Option<Encoded<User>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `LookupOrganizationResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupOrganizationResponse {
    #[prost(message, optional, tag = "1")]
    pub organization: Option<Encoded<Organization>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `LookupMembershipResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupMembershipResponse {
    #[prost(message, optional, tag = "1")]
    pub membership: Option<Encoded<Membership>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `GetInvitationResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInvitationResponse {
    #[prost(message, optional, tag = "1")]
    pub invitation: Option<Encoded<Invitation>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `GetRoleResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRoleResponse {
    #[prost(message, optional, tag = "1")]
    pub role: Option<Encoded<Role>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `LookupRoleResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupRoleResponse {
    #[prost(message, optional, tag = "1")]
    pub role: Option<Encoded<Role>>,
    #[prost(string, tag = "2")]
    pub cursor: String,
}

/// `WatchChangesResponse`, whose change is a [`SharedChange`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchChangesResponse {
    #[prost(oneof = "watch_changes_response::Event", tags = "1, 2, 3")]
    pub event: Option<watch_changes_response::Event>,
}

pub mod watch_changes_response {
    /// `WatchChangesResponse.event`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        #[prost(message, tag = "1")]
        Change(super::SharedChange),
        #[prost(message, tag = "2")]
        CaughtUp(crate::pb::CaughtUp),
        #[prost(message, tag = "3")]
        Heartbeat(crate::pb::Heartbeat),
    }
}

/// A `Change` as every watch stream of a replica sends it: encoded once (with `left_filter`
/// unset), and this stream's `left_filter` after it. (A field that comes again later in a
/// message's encoding replaces the earlier value; here it comes only once.)
#[derive(Clone, PartialEq, Debug, Default)]
pub struct SharedChange {
    pub change: Encoded<super::Change>,
    pub left_filter: bool,
}

/// `Change.left_filter`'s field number.
const LEFT_FILTER: u32 = 11;

impl prost::Message for SharedChange {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.change.encode_raw(buf);
        if self.left_filter {
            prost::encoding::bool::encode(LEFT_FILTER, &true, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.change.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.change.encoded_len()
            + if self.left_filter {
                prost::encoding::bool::encoded_len(LEFT_FILTER, &true)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        self.change.clear();
        self.left_filter = false;
    }
}

/// `DirectoryService`'s and `WatchService`'s servers (generated by build.rs from the proto).
#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/clerkmirror.v1.DirectoryService.rs"));
    include!(concat!(env!("OUT_DIR"), "/clerkmirror.v1.WatchService.rs"));
}
pub use generated::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message;

    fn twin<S: Message + Default, P: Message + Default + PartialEq + std::fmt::Debug>(served: S, plain: P) {
        assert_eq!(served.encode_to_vec(), plain.encode_to_vec(), "{}", std::any::type_name::<S>());
        assert_eq!(P::decode(&served.encode_to_vec()[..]).unwrap(), plain);
        assert_eq!(S::decode(&plain.encode_to_vec()[..]).unwrap().encode_to_vec(), plain.encode_to_vec());
    }

    #[test]
    fn every_served_response_encodes_exactly_as_its_generated_twin() {
        let user = pb::User {
            id: "user_1".into(),
            name: "users/user_1".into(),
            ..Default::default()
        };
        let org = pb::Organization {
            id: "org_1".into(),
            slug: "acme".into(),
            ..Default::default()
        };
        let membership = pb::Membership {
            id: "orgmem_1".into(),
            role: "org:admin".into(),
            permissions: vec!["org:sys_profile:read".into()],
            ..Default::default()
        };
        let invitation = pb::Invitation {
            id: "orginv_1".into(),
            ..Default::default()
        };
        let cursor = || "c1.abc".to_string();
        let e = |m: &pb::User| Encoded::of(m);
        twin(
            GetUserResponse { user: Some(e(&user)), cursor: cursor() },
            pb::GetUserResponse { user: Some(user.clone()), cursor: cursor() },
        );
        twin(
            LookupUserResponse { user: Some(e(&user)), cursor: cursor() },
            pb::LookupUserResponse { user: Some(user.clone()), cursor: cursor() },
        );
        twin(
            BatchGetUsersResponse { users: vec![e(&user), e(&pb::User::default()), e(&user)], cursor: cursor() },
            pb::BatchGetUsersResponse {
                users: vec![user.clone(), pb::User::default(), user.clone()],
                cursor: cursor(),
            },
        );
        twin(
            GetOrganizationResponse { organization: Some(Encoded::of(&org)), cursor: cursor() },
            pb::GetOrganizationResponse { organization: Some(org.clone()), cursor: cursor() },
        );
        twin(
            LookupOrganizationResponse { organization: Some(Encoded::of(&org)), cursor: cursor() },
            pb::LookupOrganizationResponse { organization: Some(org.clone()), cursor: cursor() },
        );
        twin(
            BatchGetOrganizationsResponse { organizations: vec![Encoded::of(&org)], cursor: String::new() },
            pb::BatchGetOrganizationsResponse { organizations: vec![org.clone()], cursor: String::new() },
        );
        twin(
            GetMembershipResponse { membership: Some(Encoded::of(&membership)), cursor: cursor() },
            pb::GetMembershipResponse { membership: Some(membership.clone()), cursor: cursor() },
        );
        twin(
            LookupMembershipResponse { membership: Some(Encoded::of(&membership)), cursor: cursor() },
            pb::LookupMembershipResponse { membership: Some(membership.clone()), cursor: cursor() },
        );
        twin(
            GetInvitationResponse { invitation: Some(Encoded::of(&invitation)), cursor: cursor() },
            pb::GetInvitationResponse { invitation: Some(invitation.clone()), cursor: cursor() },
        );
        let role = pb::Role {
            id: "role_1".into(),
            key: "org:admin".into(),
            permissions: vec!["org:sys_memberships:manage".into()],
            ..Default::default()
        };
        twin(
            GetRoleResponse { role: Some(Encoded::of(&role)), cursor: cursor() },
            pb::GetRoleResponse { role: Some(role.clone()), cursor: cursor() },
        );
        twin(
            LookupRoleResponse { role: Some(Encoded::of(&role)), cursor: cursor() },
            pb::LookupRoleResponse { role: Some(role.clone()), cursor: cursor() },
        );
        // A watched change: shared bytes, this stream's `left_filter` after them.
        let change = pb::Change {
            cursor: cursor(),
            entity_type: pb::EntityType::User as i32,
            entity: Some(pb::change::Entity::User(user.clone())),
            source: "webhook".into(),
            ..Default::default()
        };
        for left_filter in [false, true] {
            let served = WatchChangesResponse {
                event: Some(watch_changes_response::Event::Change(SharedChange {
                    change: Encoded::of(&change),
                    left_filter,
                })),
            };
            let plain = pb::WatchChangesResponse {
                event: Some(pb::watch_changes_response::Event::Change(pb::Change {
                    left_filter,
                    ..change.clone()
                })),
            };
            let bytes = served.encode_to_vec();
            assert_eq!(bytes.len(), plain.encoded_len());
            assert_eq!(pb::WatchChangesResponse::decode(&bytes[..]).unwrap(), plain);
        }
        let heartbeat = pb::Heartbeat { cursor: cursor() };
        twin(
            WatchChangesResponse { event: Some(watch_changes_response::Event::Heartbeat(heartbeat.clone())) },
            pb::WatchChangesResponse { event: Some(pb::watch_changes_response::Event::Heartbeat(heartbeat)) },
        );
        // Absent entities, as the generated messages leave them out.
        twin(GetUserResponse { user: None, cursor: cursor() }, pb::GetUserResponse { user: None, cursor: cursor() });
    }
}
