from . import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_SOURCE_UNSPECIFIED: _ClassVar[CheckSource]
    CHECK_SOURCE_ROLE: _ClassVar[CheckSource]
    CHECK_SOURCE_MEMBERSHIP_SNAPSHOT: _ClassVar[CheckSource]
    CHECK_SOURCE_NO_MEMBERSHIP: _ClassVar[CheckSource]
    CHECK_SOURCE_PLAN: _ClassVar[CheckSource]
CHECK_SOURCE_UNSPECIFIED: CheckSource
CHECK_SOURCE_ROLE: CheckSource
CHECK_SOURCE_MEMBERSHIP_SNAPSHOT: CheckSource
CHECK_SOURCE_NO_MEMBERSHIP: CheckSource
CHECK_SOURCE_PLAN: CheckSource

class GetInvitationRequest(_message.Message):
    __slots__ = ("name", "show_deleted", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class GetInvitationResponse(_message.Message):
    __slots__ = ("invitation", "cursor")
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    invitation: _resources_pb2.Invitation
    cursor: str
    def __init__(self, invitation: _Optional[_Union[_resources_pb2.Invitation, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListInvitationsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter", "show_deleted", "consistency")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListInvitationsResponse(_message.Message):
    __slots__ = ("invitations", "next_page_token", "cursor")
    INVITATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    invitations: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Invitation]
    next_page_token: str
    cursor: str
    def __init__(self, invitations: _Optional[_Iterable[_Union[_resources_pb2.Invitation, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter", "show_deleted", "consistency")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains", "next_page_token", "cursor")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Domain]
    next_page_token: str
    cursor: str
    def __init__(self, domains: _Optional[_Iterable[_Union[_resources_pb2.Domain, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetRoleRequest(_message.Message):
    __slots__ = ("name", "show_deleted", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class GetRoleResponse(_message.Message):
    __slots__ = ("role", "cursor")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    role: _resources_pb2.Role
    cursor: str
    def __init__(self, role: _Optional[_Union[_resources_pb2.Role, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class LookupRoleRequest(_message.Message):
    __slots__ = ("key", "consistency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    key: str
    consistency: Consistency
    def __init__(self, key: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class LookupRoleResponse(_message.Message):
    __slots__ = ("role", "cursor")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    role: _resources_pb2.Role
    cursor: str
    def __init__(self, role: _Optional[_Union[_resources_pb2.Role, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListRolesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "show_deleted", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListRolesResponse(_message.Message):
    __slots__ = ("roles", "next_page_token", "cursor")
    ROLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Role]
    next_page_token: str
    cursor: str
    def __init__(self, roles: _Optional[_Iterable[_Union[_resources_pb2.Role, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListPermissionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "show_deleted", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListPermissionsResponse(_message.Message):
    __slots__ = ("permissions", "next_page_token", "cursor")
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Permission]
    next_page_token: str
    cursor: str
    def __init__(self, permissions: _Optional[_Iterable[_Union[_resources_pb2.Permission, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class CheckPermissionRequest(_message.Message):
    __slots__ = ("organization", "user", "permission", "consistency")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    organization: str
    user: str
    permission: str
    consistency: Consistency
    def __init__(self, organization: _Optional[str] = ..., user: _Optional[str] = ..., permission: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class CheckPermissionResponse(_message.Message):
    __slots__ = ("allowed", "role", "source", "cursor")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    role: str
    source: CheckSource
    cursor: str
    def __init__(self, allowed: _Optional[bool] = ..., role: _Optional[str] = ..., source: _Optional[_Union[CheckSource, str]] = ..., cursor: _Optional[str] = ...) -> None: ...

class PermissionCheck(_message.Message):
    __slots__ = ("organization", "user", "permission")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    organization: str
    user: str
    permission: str
    def __init__(self, organization: _Optional[str] = ..., user: _Optional[str] = ..., permission: _Optional[str] = ...) -> None: ...

class CheckPermissionsRequest(_message.Message):
    __slots__ = ("checks", "consistency")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[PermissionCheck]
    consistency: Consistency
    def __init__(self, checks: _Optional[_Iterable[_Union[PermissionCheck, _Mapping]]] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class PermissionCheckResult(_message.Message):
    __slots__ = ("allowed", "role", "source")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    role: str
    source: CheckSource
    def __init__(self, allowed: _Optional[bool] = ..., role: _Optional[str] = ..., source: _Optional[_Union[CheckSource, str]] = ...) -> None: ...

class CheckPermissionsResponse(_message.Message):
    __slots__ = ("results", "cursor")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PermissionCheckResult]
    cursor: str
    def __init__(self, results: _Optional[_Iterable[_Union[PermissionCheckResult, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("name", "show_deleted", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user", "cursor")
    USER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    cursor: str
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetOrganizationRequest(_message.Message):
    __slots__ = ("name", "show_deleted", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class GetOrganizationResponse(_message.Message):
    __slots__ = ("organization", "cursor")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    organization: _resources_pb2.Organization
    cursor: str
    def __init__(self, organization: _Optional[_Union[_resources_pb2.Organization, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetMembershipRequest(_message.Message):
    __slots__ = ("name", "show_deleted", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class GetMembershipResponse(_message.Message):
    __slots__ = ("membership", "cursor")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    membership: _resources_pb2.Membership
    cursor: str
    def __init__(self, membership: _Optional[_Union[_resources_pb2.Membership, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class BatchGetUsersRequest(_message.Message):
    __slots__ = ("names", "show_deleted", "consistency")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    show_deleted: bool
    consistency: Consistency
    def __init__(self, names: _Optional[_Iterable[str]] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class BatchGetUsersResponse(_message.Message):
    __slots__ = ("users", "cursor")
    USERS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_resources_pb2.User]
    cursor: str
    def __init__(self, users: _Optional[_Iterable[_Union[_resources_pb2.User, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class BatchGetOrganizationsRequest(_message.Message):
    __slots__ = ("names", "show_deleted", "consistency")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    show_deleted: bool
    consistency: Consistency
    def __init__(self, names: _Optional[_Iterable[str]] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class BatchGetOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "cursor")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Organization]
    cursor: str
    def __init__(self, organizations: _Optional[_Iterable[_Union[_resources_pb2.Organization, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class LookupUserRequest(_message.Message):
    __slots__ = ("email", "external_id", "username", "phone_number", "consistency")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    email: str
    external_id: str
    username: str
    phone_number: str
    consistency: Consistency
    def __init__(self, email: _Optional[str] = ..., external_id: _Optional[str] = ..., username: _Optional[str] = ..., phone_number: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class LookupUserResponse(_message.Message):
    __slots__ = ("user", "cursor")
    USER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    cursor: str
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class LookupOrganizationRequest(_message.Message):
    __slots__ = ("slug", "consistency")
    SLUG_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    slug: str
    consistency: Consistency
    def __init__(self, slug: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class LookupOrganizationResponse(_message.Message):
    __slots__ = ("organization", "cursor")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    organization: _resources_pb2.Organization
    cursor: str
    def __init__(self, organization: _Optional[_Union[_resources_pb2.Organization, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class LookupMembershipRequest(_message.Message):
    __slots__ = ("organization", "user", "consistency")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    organization: str
    user: str
    consistency: Consistency
    def __init__(self, organization: _Optional[str] = ..., user: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class LookupMembershipResponse(_message.Message):
    __slots__ = ("membership", "cursor")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    membership: _resources_pb2.Membership
    cursor: str
    def __init__(self, membership: _Optional[_Union[_resources_pb2.Membership, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "show_deleted", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token", "cursor")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_resources_pb2.User]
    next_page_token: str
    cursor: str
    def __init__(self, users: _Optional[_Iterable[_Union[_resources_pb2.User, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListOrganizationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "show_deleted", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "next_page_token", "cursor")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Organization]
    next_page_token: str
    cursor: str
    def __init__(self, organizations: _Optional[_Iterable[_Union[_resources_pb2.Organization, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListMembershipsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter", "show_deleted", "consistency")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    show_deleted: bool
    consistency: Consistency
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., show_deleted: _Optional[bool] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class ListMembershipsResponse(_message.Message):
    __slots__ = ("memberships", "next_page_token", "cursor")
    MEMBERSHIPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    memberships: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Membership]
    next_page_token: str
    cursor: str
    def __init__(self, memberships: _Optional[_Iterable[_Union[_resources_pb2.Membership, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class Consistency(_message.Message):
    __slots__ = ("minimize_latency", "at_least_as_fresh", "fully_consistent")
    MINIMIZE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_AS_FRESH_FIELD_NUMBER: _ClassVar[int]
    FULLY_CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    minimize_latency: bool
    at_least_as_fresh: AtLeastAsFresh
    fully_consistent: bool
    def __init__(self, minimize_latency: _Optional[bool] = ..., at_least_as_fresh: _Optional[_Union[AtLeastAsFresh, _Mapping]] = ..., fully_consistent: _Optional[bool] = ...) -> None: ...

class AtLeastAsFresh(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...
