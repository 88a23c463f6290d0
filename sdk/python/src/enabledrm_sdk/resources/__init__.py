"""The resource groups of :class:`~enabledrm_sdk.EnableDRMClient`."""
from enabledrm_sdk.resources.analytics import AnalyticsResource
from enabledrm_sdk.resources.auth import AuthResource
from enabledrm_sdk.resources.credentials import CredentialsResource
from enabledrm_sdk.resources.executions import ExecutionsResource
from enabledrm_sdk.resources.jobs import JobsResource
from enabledrm_sdk.resources.targets import TargetsResource
from enabledrm_sdk.resources.users import UsersResource

__all__ = ["AnalyticsResource", "AuthResource", "CredentialsResource", "ExecutionsResource", "JobsResource",
           "TargetsResource", "UsersResource"]
