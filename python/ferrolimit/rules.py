"""fastlimit's ``fastlimit.rules`` names: ``from ferrolimit.rules import BucketConfig, RateLimitRule, rule``."""

from ferrolimit.fastapi import RateLimitRule, rule
from ferrolimit.starlette import BucketConfig

__all__ = ["BucketConfig", "RateLimitRule", "rule"]
