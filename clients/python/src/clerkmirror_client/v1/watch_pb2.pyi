import datetime

from . import resources_pb2 as _resources_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntityType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITY_TYPE_UNSPECIFIED: _ClassVar[EntityType]
    ENTITY_TYPE_USER: _ClassVar[EntityType]
    ENTITY_TYPE_ORGANIZATION: _ClassVar[EntityType]
    ENTITY_TYPE_MEMBERSHIP: _ClassVar[EntityType]
    ENTITY_TYPE_ROLE: _ClassVar[EntityType]
    ENTITY_TYPE_PERMISSION: _ClassVar[EntityType]
    ENTITY_TYPE_INVITATION: _ClassVar[EntityType]
    ENTITY_TYPE_DOMAIN: _ClassVar[EntityType]
    ENTITY_TYPE_SUBSCRIPTION_ITEM: _ClassVar[EntityType]
    ENTITY_TYPE_SUBSCRIPTION: _ClassVar[EntityType]
    ENTITY_TYPE_PLAN: _ClassVar[EntityType]
    ENTITY_TYPE_PAYMENT_ATTEMPT: _ClassVar[EntityType]

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    OPERATION_CREATED: _ClassVar[Operation]
    OPERATION_UPDATED: _ClassVar[Operation]
    OPERATION_DELETED: _ClassVar[Operation]
ENTITY_TYPE_UNSPECIFIED: EntityType
ENTITY_TYPE_USER: EntityType
ENTITY_TYPE_ORGANIZATION: EntityType
ENTITY_TYPE_MEMBERSHIP: EntityType
ENTITY_TYPE_ROLE: EntityType
ENTITY_TYPE_PERMISSION: EntityType
ENTITY_TYPE_INVITATION: EntityType
ENTITY_TYPE_DOMAIN: EntityType
ENTITY_TYPE_SUBSCRIPTION_ITEM: EntityType
ENTITY_TYPE_SUBSCRIPTION: EntityType
ENTITY_TYPE_PLAN: EntityType
ENTITY_TYPE_PAYMENT_ATTEMPT: EntityType
OPERATION_UNSPECIFIED: Operation
OPERATION_CREATED: Operation
OPERATION_UPDATED: Operation
OPERATION_DELETED: Operation

class WatchChangesRequest(_message.Message):
    __slots__ = ("start_cursor", "start_from_oldest", "entity_types", "organization_id", "user_id", "filter", "heartbeat_interval", "send_initial_state")
    START_CURSOR_FIELD_NUMBER: _ClassVar[int]
    START_FROM_OLDEST_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SEND_INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    start_cursor: str
    start_from_oldest: bool
    entity_types: _containers.RepeatedScalarFieldContainer[EntityType]
    organization_id: str
    user_id: str
    filter: str
    heartbeat_interval: _duration_pb2.Duration
    send_initial_state: bool
    def __init__(self, start_cursor: _Optional[str] = ..., start_from_oldest: _Optional[bool] = ..., entity_types: _Optional[_Iterable[_Union[EntityType, str]]] = ..., organization_id: _Optional[str] = ..., user_id: _Optional[str] = ..., filter: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., send_initial_state: _Optional[bool] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("change", "caught_up", "heartbeat")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    change: Change
    caught_up: CaughtUp
    heartbeat: Heartbeat
    def __init__(self, change: _Optional[_Union[Change, _Mapping]] = ..., caught_up: _Optional[_Union[CaughtUp, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("cursor", "operation", "entity_type", "user", "organization", "membership", "role", "permission", "invitation", "domain", "subscription_item", "subscription", "plan", "payment_attempt", "previous_user", "previous_organization", "previous_membership", "previous_role", "previous_permission", "previous_invitation", "previous_domain", "previous_subscription_item", "previous_subscription", "previous_plan", "previous_payment_attempt", "commit_time", "left_filter", "source")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ITEM_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_USER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ROLE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_INVITATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SUBSCRIPTION_ITEM_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PLAN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAYMENT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    LEFT_FILTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    operation: Operation
    entity_type: EntityType
    user: _resources_pb2.User
    organization: _resources_pb2.Organization
    membership: _resources_pb2.Membership
    role: _resources_pb2.Role
    permission: _resources_pb2.Permission
    invitation: _resources_pb2.Invitation
    domain: _resources_pb2.Domain
    subscription_item: _resources_pb2.SubscriptionItem
    subscription: _resources_pb2.Subscription
    plan: _resources_pb2.Plan
    payment_attempt: _resources_pb2.PaymentAttempt
    previous_user: _resources_pb2.User
    previous_organization: _resources_pb2.Organization
    previous_membership: _resources_pb2.Membership
    previous_role: _resources_pb2.Role
    previous_permission: _resources_pb2.Permission
    previous_invitation: _resources_pb2.Invitation
    previous_domain: _resources_pb2.Domain
    previous_subscription_item: _resources_pb2.SubscriptionItem
    previous_subscription: _resources_pb2.Subscription
    previous_plan: _resources_pb2.Plan
    previous_payment_attempt: _resources_pb2.PaymentAttempt
    commit_time: _timestamp_pb2.Timestamp
    left_filter: bool
    source: str
    def __init__(self, cursor: _Optional[str] = ..., operation: _Optional[_Union[Operation, str]] = ..., entity_type: _Optional[_Union[EntityType, str]] = ..., user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., organization: _Optional[_Union[_resources_pb2.Organization, _Mapping]] = ..., membership: _Optional[_Union[_resources_pb2.Membership, _Mapping]] = ..., role: _Optional[_Union[_resources_pb2.Role, _Mapping]] = ..., permission: _Optional[_Union[_resources_pb2.Permission, _Mapping]] = ..., invitation: _Optional[_Union[_resources_pb2.Invitation, _Mapping]] = ..., domain: _Optional[_Union[_resources_pb2.Domain, _Mapping]] = ..., subscription_item: _Optional[_Union[_resources_pb2.SubscriptionItem, _Mapping]] = ..., subscription: _Optional[_Union[_resources_pb2.Subscription, _Mapping]] = ..., plan: _Optional[_Union[_resources_pb2.Plan, _Mapping]] = ..., payment_attempt: _Optional[_Union[_resources_pb2.PaymentAttempt, _Mapping]] = ..., previous_user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., previous_organization: _Optional[_Union[_resources_pb2.Organization, _Mapping]] = ..., previous_membership: _Optional[_Union[_resources_pb2.Membership, _Mapping]] = ..., previous_role: _Optional[_Union[_resources_pb2.Role, _Mapping]] = ..., previous_permission: _Optional[_Union[_resources_pb2.Permission, _Mapping]] = ..., previous_invitation: _Optional[_Union[_resources_pb2.Invitation, _Mapping]] = ..., previous_domain: _Optional[_Union[_resources_pb2.Domain, _Mapping]] = ..., previous_subscription_item: _Optional[_Union[_resources_pb2.SubscriptionItem, _Mapping]] = ..., previous_subscription: _Optional[_Union[_resources_pb2.Subscription, _Mapping]] = ..., previous_plan: _Optional[_Union[_resources_pb2.Plan, _Mapping]] = ..., previous_payment_attempt: _Optional[_Union[_resources_pb2.PaymentAttempt, _Mapping]] = ..., commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., left_filter: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class CaughtUp(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...
