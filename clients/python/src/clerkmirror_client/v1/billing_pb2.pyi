import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import directory_pb2 as _directory_pb2
from . import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntitlementSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITLEMENT_SOURCE_UNSPECIFIED: _ClassVar[EntitlementSource]
    ENTITLEMENT_SOURCE_SUBSCRIPTION_ITEM: _ClassVar[EntitlementSource]
    ENTITLEMENT_SOURCE_DEFAULT_PLAN: _ClassVar[EntitlementSource]
    ENTITLEMENT_SOURCE_UNKNOWN_PLAN: _ClassVar[EntitlementSource]
ENTITLEMENT_SOURCE_UNSPECIFIED: EntitlementSource
ENTITLEMENT_SOURCE_SUBSCRIPTION_ITEM: EntitlementSource
ENTITLEMENT_SOURCE_DEFAULT_PLAN: EntitlementSource
ENTITLEMENT_SOURCE_UNKNOWN_PLAN: EntitlementSource

class GetSubscriptionRequest(_message.Message):
    __slots__ = ("payer", "consistency")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    payer: str
    consistency: _directory_pb2.Consistency
    def __init__(self, payer: _Optional[str] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class GetSubscriptionResponse(_message.Message):
    __slots__ = ("subscription", "cursor")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    subscription: _resources_pb2.Subscription
    cursor: str
    def __init__(self, subscription: _Optional[_Union[_resources_pb2.Subscription, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListSubscriptionItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    consistency: _directory_pb2.Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class ListSubscriptionItemsResponse(_message.Message):
    __slots__ = ("subscription_items", "next_page_token", "cursor")
    SUBSCRIPTION_ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    subscription_items: _containers.RepeatedCompositeFieldContainer[_resources_pb2.SubscriptionItem]
    next_page_token: str
    cursor: str
    def __init__(self, subscription_items: _Optional[_Iterable[_Union[_resources_pb2.SubscriptionItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("name", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    consistency: _directory_pb2.Consistency
    def __init__(self, name: _Optional[str] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class GetPlanResponse(_message.Message):
    __slots__ = ("plan", "cursor")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    plan: _resources_pb2.Plan
    cursor: str
    def __init__(self, plan: _Optional[_Union[_resources_pb2.Plan, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "consistency")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    consistency: _directory_pb2.Consistency
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "next_page_token", "cursor")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Plan]
    next_page_token: str
    cursor: str
    def __init__(self, plans: _Optional[_Iterable[_Union[_resources_pb2.Plan, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class CheckEntitlementRequest(_message.Message):
    __slots__ = ("payer", "feature", "consistency")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    payer: str
    feature: str
    consistency: _directory_pb2.Consistency
    def __init__(self, payer: _Optional[str] = ..., feature: _Optional[str] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class CheckEntitlementResponse(_message.Message):
    __slots__ = ("entitled", "subscription_item", "plan", "period_end", "cursor", "source")
    ENTITLED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ITEM_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    entitled: bool
    subscription_item: str
    plan: str
    period_end: _timestamp_pb2.Timestamp
    cursor: str
    source: EntitlementSource
    def __init__(self, entitled: _Optional[bool] = ..., subscription_item: _Optional[str] = ..., plan: _Optional[str] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[str] = ..., source: _Optional[_Union[EntitlementSource, str]] = ...) -> None: ...

class EntitlementCheck(_message.Message):
    __slots__ = ("payer", "feature")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    payer: str
    feature: str
    def __init__(self, payer: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class CheckEntitlementsRequest(_message.Message):
    __slots__ = ("checks", "consistency")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[EntitlementCheck]
    consistency: _directory_pb2.Consistency
    def __init__(self, checks: _Optional[_Iterable[_Union[EntitlementCheck, _Mapping]]] = ..., consistency: _Optional[_Union[_directory_pb2.Consistency, _Mapping]] = ...) -> None: ...

class EntitlementCheckResult(_message.Message):
    __slots__ = ("entitled", "subscription_item", "plan", "period_end", "source")
    ENTITLED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ITEM_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    entitled: bool
    subscription_item: str
    plan: str
    period_end: _timestamp_pb2.Timestamp
    source: EntitlementSource
    def __init__(self, entitled: _Optional[bool] = ..., subscription_item: _Optional[str] = ..., plan: _Optional[str] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[EntitlementSource, str]] = ...) -> None: ...

class CheckEntitlementsResponse(_message.Message):
    __slots__ = ("results", "cursor")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntitlementCheckResult]
    cursor: str
    def __init__(self, results: _Optional[_Iterable[_Union[EntitlementCheckResult, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...
