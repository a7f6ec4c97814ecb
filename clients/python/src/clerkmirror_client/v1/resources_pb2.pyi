import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PermissionsSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERMISSIONS_SOURCE_UNSPECIFIED: _ClassVar[PermissionsSource]
    PERMISSIONS_SOURCE_ROLE: _ClassVar[PermissionsSource]
    PERMISSIONS_SOURCE_MEMBERSHIP_SNAPSHOT: _ClassVar[PermissionsSource]
    PERMISSIONS_SOURCE_DELETED_ROLE: _ClassVar[PermissionsSource]
PERMISSIONS_SOURCE_UNSPECIFIED: PermissionsSource
PERMISSIONS_SOURCE_ROLE: PermissionsSource
PERMISSIONS_SOURCE_MEMBERSHIP_SNAPSHOT: PermissionsSource
PERMISSIONS_SOURCE_DELETED_ROLE: PermissionsSource

class User(_message.Message):
    __slots__ = ("name", "id", "external_id", "username", "first_name", "last_name", "image_url", "primary_email_address", "email_addresses", "phone_numbers", "public_metadata", "private_metadata", "unsafe_metadata", "banned", "locked", "create_time", "update_time", "last_sign_in_time", "delete_time", "update_cursor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_METADATA_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SIGN_IN_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    external_id: str
    username: str
    first_name: str
    last_name: str
    image_url: str
    primary_email_address: str
    email_addresses: _containers.RepeatedCompositeFieldContainer[EmailAddress]
    phone_numbers: _containers.RepeatedCompositeFieldContainer[PhoneNumber]
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    unsafe_metadata: _struct_pb2.Struct
    banned: bool
    locked: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    last_sign_in_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., external_id: _Optional[str] = ..., username: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., image_url: _Optional[str] = ..., primary_email_address: _Optional[str] = ..., email_addresses: _Optional[_Iterable[_Union[EmailAddress, _Mapping]]] = ..., phone_numbers: _Optional[_Iterable[_Union[PhoneNumber, _Mapping]]] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., unsafe_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., banned: _Optional[bool] = ..., locked: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sign_in_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ...) -> None: ...

class EmailAddress(_message.Message):
    __slots__ = ("id", "email_address", "verification_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    email_address: str
    verification_status: str
    def __init__(self, id: _Optional[str] = ..., email_address: _Optional[str] = ..., verification_status: _Optional[str] = ...) -> None: ...

class PhoneNumber(_message.Message):
    __slots__ = ("id", "phone_number", "verification_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    phone_number: str
    verification_status: str
    def __init__(self, id: _Optional[str] = ..., phone_number: _Optional[str] = ..., verification_status: _Optional[str] = ...) -> None: ...

class Organization(_message.Message):
    __slots__ = ("name", "id", "display_name", "slug", "image_url", "members_count", "public_metadata", "private_metadata", "create_time", "update_time", "delete_time", "update_cursor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    display_name: str
    slug: str
    image_url: str
    members_count: int
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., display_name: _Optional[str] = ..., slug: _Optional[str] = ..., image_url: _Optional[str] = ..., members_count: _Optional[int] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("name", "id", "organization_id", "user_id", "role", "role_name", "permissions", "public_metadata", "private_metadata", "organization", "public_user_data", "create_time", "update_time", "delete_time", "update_cursor", "permissions_source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_USER_DATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    organization_id: str
    user_id: str
    role: str
    role_name: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    organization: OrganizationSummary
    public_user_data: PublicUserData
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    permissions_source: PermissionsSource
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., organization_id: _Optional[str] = ..., user_id: _Optional[str] = ..., role: _Optional[str] = ..., role_name: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., organization: _Optional[_Union[OrganizationSummary, _Mapping]] = ..., public_user_data: _Optional[_Union[PublicUserData, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., permissions_source: _Optional[_Union[PermissionsSource, str]] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("name", "id", "key", "display_name", "description", "permissions", "is_creator_eligible", "create_time", "update_time", "delete_time", "update_cursor", "permission_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    IS_CREATOR_ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    key: str
    display_name: str
    description: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    is_creator_eligible: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    permission_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., is_creator_eligible: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., permission_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Permission(_message.Message):
    __slots__ = ("name", "id", "key", "display_name", "description", "type", "create_time", "update_time", "delete_time", "update_cursor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    key: str
    display_name: str
    description: str
    type: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ...) -> None: ...

class OrganizationSummary(_message.Message):
    __slots__ = ("id", "display_name", "slug", "image_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    slug: str
    image_url: str
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., slug: _Optional[str] = ..., image_url: _Optional[str] = ...) -> None: ...

class PublicUserData(_message.Message):
    __slots__ = ("user_id", "first_name", "last_name", "image_url", "identifier", "username")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    first_name: str
    last_name: str
    image_url: str
    identifier: str
    username: str
    def __init__(self, user_id: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., image_url: _Optional[str] = ..., identifier: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class Domain(_message.Message):
    __slots__ = ("name", "id", "organization_id", "domain", "enrollment_mode", "verification_status", "affiliation_email_address", "create_time", "update_time", "delete_time", "update_cursor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_MODE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    AFFILIATION_EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    organization_id: str
    domain: str
    enrollment_mode: str
    verification_status: str
    affiliation_email_address: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., organization_id: _Optional[str] = ..., domain: _Optional[str] = ..., enrollment_mode: _Optional[str] = ..., verification_status: _Optional[str] = ..., affiliation_email_address: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("name", "id", "organization_id", "email_address", "role", "role_name", "status", "public_metadata", "private_metadata", "expire_time", "create_time", "update_time", "delete_time", "update_cursor", "user_id", "expired_by_mirror")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_BY_MIRROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    organization_id: str
    email_address: str
    role: str
    role_name: str
    status: str
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    expire_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    update_cursor: str
    user_id: str
    expired_by_mirror: bool
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., organization_id: _Optional[str] = ..., email_address: _Optional[str] = ..., role: _Optional[str] = ..., role_name: _Optional[str] = ..., status: _Optional[str] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., user_id: _Optional[str] = ..., expired_by_mirror: _Optional[bool] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("name", "id", "payer", "status", "active_time", "cancel_time", "end_time", "past_due_time", "create_time", "update_time", "update_cursor", "delete_time", "items", "latest_payment_id", "latest_payment_status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAST_DUE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LATEST_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    payer: str
    status: str
    active_time: _timestamp_pb2.Timestamp
    cancel_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    past_due_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    update_cursor: str
    delete_time: _timestamp_pb2.Timestamp
    items: _containers.RepeatedCompositeFieldContainer[SubscriptionItem]
    latest_payment_id: str
    latest_payment_status: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., payer: _Optional[str] = ..., status: _Optional[str] = ..., active_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., past_due_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., items: _Optional[_Iterable[_Union[SubscriptionItem, _Mapping]]] = ..., latest_payment_id: _Optional[str] = ..., latest_payment_status: _Optional[str] = ...) -> None: ...

class PaymentAttempt(_message.Message):
    __slots__ = ("name", "id", "payment_id", "payer", "status", "charge_type", "amount", "currency", "failed_reason", "paid_time", "fail_time", "billing_time", "create_time", "update_time", "update_cursor", "delete_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHARGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    FAILED_REASON_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_FIELD_NUMBER: _ClassVar[int]
    FAIL_TIME_FIELD_NUMBER: _ClassVar[int]
    BILLING_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    payment_id: str
    payer: str
    status: str
    charge_type: str
    amount: int
    currency: str
    failed_reason: str
    paid_time: _timestamp_pb2.Timestamp
    fail_time: _timestamp_pb2.Timestamp
    billing_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    update_cursor: str
    delete_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., payment_id: _Optional[str] = ..., payer: _Optional[str] = ..., status: _Optional[str] = ..., charge_type: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., failed_reason: _Optional[str] = ..., paid_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fail_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., billing_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscriptionItem(_message.Message):
    __slots__ = ("name", "id", "subscription", "payer", "plan", "plan_slug", "status", "is_free_trial", "period_start", "period_end", "interval", "seats", "create_time", "update_time", "update_cursor", "delete_time", "ended_by_mirror")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_SLUG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IS_FREE_TRIAL_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_MIRROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    subscription: str
    payer: str
    plan: str
    plan_slug: str
    status: str
    is_free_trial: bool
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    interval: str
    seats: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    update_cursor: str
    delete_time: _timestamp_pb2.Timestamp
    ended_by_mirror: bool
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., subscription: _Optional[str] = ..., payer: _Optional[str] = ..., plan: _Optional[str] = ..., plan_slug: _Optional[str] = ..., status: _Optional[str] = ..., is_free_trial: _Optional[bool] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval: _Optional[str] = ..., seats: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_cursor: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_by_mirror: _Optional[bool] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("name", "id", "slug", "display_name", "description", "payer_type", "features", "is_default", "is_recurring", "publicly_visible", "fee_amount", "annual_fee_amount", "annual_monthly_fee_amount", "currency", "free_trial_days", "update_cursor", "delete_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAYER_TYPE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    IS_RECURRING_FIELD_NUMBER: _ClassVar[int]
    PUBLICLY_VISIBLE_FIELD_NUMBER: _ClassVar[int]
    FEE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ANNUAL_FEE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ANNUAL_MONTHLY_FEE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    FREE_TRIAL_DAYS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    slug: str
    display_name: str
    description: str
    payer_type: str
    features: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    is_recurring: bool
    publicly_visible: bool
    fee_amount: int
    annual_fee_amount: int
    annual_monthly_fee_amount: int
    currency: str
    free_trial_days: int
    update_cursor: str
    delete_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., slug: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., payer_type: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., is_recurring: _Optional[bool] = ..., publicly_visible: _Optional[bool] = ..., fee_amount: _Optional[int] = ..., annual_fee_amount: _Optional[int] = ..., annual_monthly_fee_amount: _Optional[int] = ..., currency: _Optional[str] = ..., free_trial_days: _Optional[int] = ..., update_cursor: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
