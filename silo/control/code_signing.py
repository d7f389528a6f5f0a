"""CodeSigningService: signing profiles, Lambda's code signing configurations, and the check of a deployment.

A signing profile is an Ed25519 public key registered with silo under a name (`silo signing-profile add`);
its version ARN, `arn:aws:signer:<region>:<account>:/signing-profiles/<name>/<digest of the key>`, is what
a configuration's AllowedPublishers lists, as AWS Signer's profile version ARNs are on Lambda. How a
signature travels with a zip: silo.signature.

The check follows Lambda's rules. An artifact (a function's code, each of its layers) whose signature is
made by an allowed profile's key passes. One with no signature, or signed by a profile the configuration
does not allow (or silo does not know), is untrusted: refused under `Enforce`
(CodeVerificationFailedException), deployed with a warning in silo's log under `Warn`. A signature by an
allowed profile that does not verify means the artifact was changed after signing: refused under either
policy (InvalidCodeSignatureException), as Lambda always refuses a failed integrity check.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from silo import signature
from silo.control.configuration import lambda_timestamp
from silo.control.fields import dict_member, list_member, str_member
from silo.control.violations import Violations, enum_constraint
from silo.errors import (
    CodeSigningConfigNotFoundException,
    CodeVerificationFailedException,
    InvalidCodeSignatureException,
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from silo.store.code_signing import CodeSigningConfigRecord, CodeSigningRepository, SigningProfile
from silo.store.db import Database

log = logging.getLogger(__name__)

POLICIES = ("Warn", "Enforce")
CSC_ARN = re.compile(r"arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):code-signing-config:(csc-[a-z0-9]{17})", re.ASCII)
PROFILE_NAME = re.compile(r"[a-zA-Z0-9_]{2,64}", re.ASCII)
MAX_PUBLISHERS = 20
LIST_PAGE_MAX = 50
INTEGRITY_FAILED = (
    "The code signature failed the integrity check. Lambda always blocks deployment if the integrity check "
    "fails, even if code signing policy is set to WARN."
)


def _not_found(arn: str) -> str:
    return f"The Lambda code signing configuration {arn} can not be found."


class CodeSigningService:
    """Signing profiles and code signing configurations; `check` judges what a deployment brings."""

    def __init__(self, region: str, account: str, db: Database) -> None:
        self.region = region
        self.account = account
        self.repo = CodeSigningRepository(db)
        # The functions that use a configuration (FunctionService sets it), so a used one is not deleted.
        self.functions_using: Callable[[str], list[str]] = lambda arn: []

    # -- signing profiles (silo's own) -----------------------------------------------------------------

    def profile_arn(self, profile: SigningProfile) -> str:
        return f"arn:aws:signer:{self.region}:{self.account}:/signing-profiles/{profile.name}/{profile.version}"

    def _shown(self, profile: SigningProfile) -> dict[str, str]:
        return {
            "Name": profile.name,
            "SigningProfileVersionArn": self.profile_arn(profile),
            "PublicKey": profile.public_key,
            "CreatedAt": profile.created_at,
        }

    def add_profile(self, body: dict[str, Any]) -> dict[str, str]:
        """Register a public key (PEM, Ed25519) under a name."""
        name = str_member(body, "Name")
        pem = str_member(body, "PublicKey")
        if name is None or PROFILE_NAME.fullmatch(name) is None:
            raise InvalidParameterValueException(
                "A signing profile needs a Name of 2 to 64 letters, digits or underscores (as AWS Signer's)."
            )
        if pem is None:
            raise InvalidParameterValueException("A signing profile needs its PublicKey, as PEM.")
        try:
            key = signature.load_public_key(pem.encode())
        except ValueError as exc:
            raise InvalidParameterValueException(f"The PublicKey is not usable: {exc}") from None
        raw = key.public_bytes_raw()
        profile = SigningProfile(name, pem, hashlib.sha256(raw).hexdigest()[:10], lambda_timestamp())
        if not self.repo.add_profile(profile):
            raise ResourceConflictException(f"A signing profile named {name} already exists.")
        return self._shown(profile)

    def list_profiles(self) -> dict[str, list[dict[str, str]]]:
        return {"SigningProfiles": [self._shown(p) for p in self.repo.profiles()]}

    def delete_profile(self, name: str) -> None:
        if not self.repo.delete_profile(name):
            raise ResourceNotFoundException(f"No signing profile is named {name}.")

    # -- code signing configurations ---------------------------------------------------------------------

    def _arn(self, config_id: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:code-signing-config:{config_id}"

    def _answer(self, record: CodeSigningConfigRecord) -> dict[str, Any]:
        c = record.config
        return {
            "CodeSigningConfigId": record.id,
            "CodeSigningConfigArn": self._arn(record.id),
            "Description": c["Description"],
            "AllowedPublishers": {"SigningProfileVersionArns": list(c["AllowedPublishers"])},
            "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": c["UntrustedArtifactOnDeployment"]},
            "LastModified": record.last_modified,
        }

    def _record(self, arn: str, missing: type[Exception] = ResourceNotFoundException) -> CodeSigningConfigRecord:
        match = CSC_ARN.fullmatch(arn)
        if match is None:
            v = Violations()
            v.add(arn, "codeSigningConfigArn", f"Member must satisfy regular expression pattern: {CSC_ARN.pattern}")
            raise v.error()
        record = None if (match[1], match[2]) != (self.region, self.account) else self.repo.config(match[3])
        if record is None:
            raise missing(_not_found(arn))
        return record

    def require(self, arn: str) -> str:
        """The ARN of an existing configuration, as stored; CodeSigningConfigNotFoundException otherwise."""
        return self._arn(self._record(arn, CodeSigningConfigNotFoundException).id)

    @staticmethod
    def _members(body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        v = Violations()
        description = str_member(body, "Description")
        if description is not None and len(description) > 256:
            v.add(description, "description", "Member must have length less than or equal to 256")
        publishers = dict_member(body, "AllowedPublishers")
        arns = None if publishers is None else list_member(publishers, "SigningProfileVersionArns")
        if current is None and arns is None:
            v.add("null", "allowedPublishers", "Member must not be null")
        if arns is not None and not 1 <= len(arns) <= MAX_PUBLISHERS:
            v.add(arns, "allowedPublishers.signingProfileVersionArns", "Member must have length between 1 and 20")
        policies = dict_member(body, "CodeSigningPolicies") or {}
        policy = str_member(policies, "UntrustedArtifactOnDeployment")
        if policy is not None and policy not in POLICIES:
            v.add(policy, "codeSigningPolicies.untrustedArtifactOnDeployment", enum_constraint(POLICIES))
        v.raise_if_any()
        before = current or {"Description": "", "AllowedPublishers": [], "UntrustedArtifactOnDeployment": "Warn"}
        return {
            "Description": before["Description"] if description is None else description,
            "AllowedPublishers": before["AllowedPublishers"] if arns is None else [str(a) for a in arns],
            "UntrustedArtifactOnDeployment": policy or before["UntrustedArtifactOnDeployment"],
        }

    def create_config(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateCodeSigningConfig."""
        record = CodeSigningConfigRecord(
            f"csc-{secrets.token_hex(9)[:17]}", self._members(body, None), lambda_timestamp()
        )
        self.repo.put_config(record)
        return {"CodeSigningConfig": self._answer(record)}

    def get_config(self, arn: str) -> dict[str, Any]:
        return {"CodeSigningConfig": self._answer(self._record(arn))}

    def update_config(self, arn: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self._record(arn)
        record = replace(current, config=self._members(body, current.config), last_modified=lambda_timestamp())
        self.repo.put_config(record)
        return {"CodeSigningConfig": self._answer(record)}

    def delete_config(self, arn: str) -> None:
        record = self._record(arn)
        using = self.functions_using(self._arn(record.id))
        if using:
            raise ResourceConflictException(
                f"The code signing configuration cannot be deleted because it is used by the following "
                f"functions: {', '.join(using)}. Remove it from them (DeleteFunctionCodeSigningConfig) first."
            )
        self.repo.delete_config(record.id)

    def list_configs(self, marker: str | None, max_items: int | None) -> dict[str, Any]:
        """ListCodeSigningConfigs: by id, pages of at most 50."""
        if max_items is not None and not 1 <= max_items <= 10000:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        limit = min(max_items or LIST_PAGE_MAX, LIST_PAGE_MAX)
        page = self.repo.configs(marker or "", limit + 1)
        out: dict[str, Any] = {"CodeSigningConfigs": [self._answer(r) for r in page[:limit]]}
        if len(page) > limit:
            out["NextMarker"] = page[limit - 1].id
        return out

    def list_functions(self, arn: str, marker: str | None, max_items: int | None) -> dict[str, Any]:
        """ListFunctionsByCodeSigningConfig: the ARNs of the functions that use it, by name; pages of 50."""
        if max_items is not None and not 1 <= max_items <= 10000:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        record = self._record(arn)
        names = [n for n in self.functions_using(self._arn(record.id)) if marker is None or n > marker]
        limit = min(max_items or LIST_PAGE_MAX, LIST_PAGE_MAX)
        prefix = f"arn:aws:lambda:{self.region}:{self.account}:function:"
        out: dict[str, Any] = {"FunctionArns": [prefix + n for n in names[:limit]]}
        if len(names) > limit:
            out["NextMarker"] = names[limit - 1]
        return out

    # -- a deployment --------------------------------------------------------------------------------

    def check(self, arn: str, artifacts: list[tuple[str, bytes]]) -> None:
        """Judge each (what, zip) a deployment under configuration `arn` brings (see the module's docstring)."""
        record = self._record(arn, CodeSigningConfigNotFoundException)
        allowed = set(record.config["AllowedPublishers"])
        enforce = record.config["UntrustedArtifactOnDeployment"] == "Enforce"
        for what, data in artifacts:
            reason = self._untrusted(data, allowed)
            if reason is None:
                continue
            if enforce:
                subject = what[:1].upper() + what[1:]
                raise CodeVerificationFailedException(
                    f"{subject} is not signed by a publisher the code signing configuration {self._arn(record.id)} "
                    f"allows ({reason}), and its policy is Enforce: the deployment is refused. Sign it with "
                    "`silo sign ZIP --key KEY --profile NAME` using an allowed profile's key."
                )
            log.warning(
                "deploying %s although it is not signed by an allowed publisher of %s (%s): its policy is Warn",
                what,
                self._arn(record.id),
                reason,
            )

    def _untrusted(self, data: bytes, allowed: set[str]) -> str | None:
        """Why an artifact is untrusted, or None when an allowed profile signed it. An allowed profile's
        signature that does not verify is refused whatever the policy."""
        try:
            signed = signature.read(data)
        except signature.SignatureFormatError as exc:
            return str(exc)
        if signed is None:
            return "it carries no signature"
        profile = self.repo.profile(signed.profile)
        if profile is None:
            return f"it is signed by {signed.profile}, a signing profile silo does not know"
        if self.profile_arn(profile) not in allowed:
            return f"its signing profile {self.profile_arn(profile)} is not among the allowed publishers"
        if not signature.verifies(signed, signature.load_public_key(profile.public_key.encode())):
            raise InvalidCodeSignatureException(INTEGRITY_FAILED)
        return None
