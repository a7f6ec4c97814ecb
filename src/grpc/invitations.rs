//! `DirectoryService`'s organization invitations: GetInvitation and ListInvitations. Reads route
//! as every directory read does (memory when `consistency` allows and the cache holds the
//! answer, else one PostgreSQL statement); lists read PostgreSQL.

use tonic::{Request, Response, Status};

use super::directory::{Directory, ListPage, deadline};
use super::{names, traced};
use crate::cache::{Answer, Held};
use crate::pb;
use crate::store::{InvitationRecord, read};

impl Directory {
    pub(super) async fn get_invitation_rpc(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<pb::served::GetInvitationResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetInvitation", async {
            let (org, id) = names::invitation_ids("name", &r.name)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            // Held by id: one under another organization is not this name's.
            let memory = |i: &crate::cache::Index| match i.get::<InvitationRecord>(id) {
                Answer::Found(m, at) if m.organization_id != org => Answer::Absent(at),
                Answer::Found(m, at) => Answer::Found(Held::of(&*m, m.delete_time.is_some()), at),
                Answer::Absent(at) => Answer::Absent(at),
                Answer::Unknown => Answer::Unknown,
            };
            let (invitation, cursor) = self
                .one::<InvitationRecord>(route, &r.name, r.show_deleted, memory, async |c| read::invitation(c, org, id).await)
                .await?;
            Ok(pb::served::GetInvitationResponse {
                invitation: Some(invitation),
                cursor,
            })
        })
        .await
    }

    pub(super) async fn list_invitations_rpc(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let r = request.into_inner();
        traced("ListInvitations", async {
            let page = ListPage::under_organization("ListInvitations", &r.parent, r.consistency.as_ref())?;
            let (invitations, next_page_token, cursor) = self
                .list::<InvitationRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
                .await?;
            Ok(pb::ListInvitationsResponse {
                invitations,
                next_page_token,
                cursor,
            })
        })
        .await
    }
}
