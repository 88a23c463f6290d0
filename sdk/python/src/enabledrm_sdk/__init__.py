"""Python SDK for the OpsConductor (EnableDRM) API.

    from enabledrm_sdk import EnableDRMClient

    client = EnableDRMClient(base_url="http://localhost:8000", token="your_jwt_token")
    execution = client.executions.get_by_serial("J20250001.0001")
    print(f"Status: {execution.status}")
"""
from enabledrm_sdk._version import __version__
from enabledrm_sdk.client import EnableDRMClient
from enabledrm_sdk.errors import (
    ApiError,
    BadRequest,
    Conflict,
    EnableDRMError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from enabledrm_sdk.events import EventStream, EventStreamClosed
from enabledrm_sdk.models import (
    Action,
    AnalyticsBucket,
    ApiObject,
    Branch,
    BranchDetail,
    BranchOutput,
    BranchTarget,
    BulkItem,
    BulkResult,
    Credential,
    Event,
    Execution,
    ExecutionAnalytics,
    ExecutionJob,
    Job,
    JobMetrics,
    Page,
    Pagination,
    RecentBranch,
    Schedule,
    SearchResult,
    SearchResults,
    Step,
    Target,
    TargetHistory,
    TargetHistoryItem,
    TargetMetrics,
    TargetPerformance,
    Token,
    User,
    parse_time,
)

__all__ = [
    "__version__", "EnableDRMClient",
    # errors
    "EnableDRMError", "ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed",
    "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "ValidationError", "RateLimited", "ServerError",
    "InternalError", "TransportError", "WaitTimeout", "EventStreamClosed",
    # models
    "ApiObject", "Token", "User", "Credential", "Target", "Action", "Schedule", "Job", "Branch", "Step",
    "BranchTarget", "BranchDetail", "BranchOutput", "ExecutionJob", "Execution", "SearchResult", "SearchResults",
    "BulkItem",
    "BulkResult", "RecentBranch", "TargetPerformance", "TargetHistoryItem", "TargetHistory", "AnalyticsBucket",
    "ExecutionAnalytics", "TargetMetrics", "JobMetrics", "Pagination", "Page", "Event", "EventStream", "parse_time",
]
