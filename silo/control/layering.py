"""A function's layers and its code signing: the layer versions a deployment names resolved and merged
for /opt, the unzipped limit over code and layers, the check of what is deployed against the function's
code signing configuration, and Put/DeleteFunctionCodeSigningConfig.

A mixin of FunctionService, like silo.control.aliasing: it shares the service's lock, maps and stores,
and the helpers named under TYPE_CHECKING below. The layers themselves are silo.control.layers'.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from silo.control import validation
from silo.control.code_signing import CodeSigningService
from silo.control.fields import str_member
from silo.control.layers import LayerService, UsedLayer, tree_digest, tree_size, used_layers
from silo.control.names import LATEST
from silo.errors import InvalidParameterValueException, ServiceException
from silo.store.code import CodeStore
from silo.store.functions import FunctionRecord, FunctionRepository

log = logging.getLogger(__name__)


class LayeringOperations:
    """What a function's layers and code signing configuration ask of a deployment."""

    layers: LayerService
    code_signing: CodeSigningService
    code: CodeStore
    repo: FunctionRepository
    _write_lock: threading.RLock
    _records: dict[str, dict[str, FunctionRecord]]
    _unzipped: dict[str, int]  # unpacked bytes of each function package, by its sha

    if TYPE_CHECKING:

        def _unqualified(self, function_name: str) -> FunctionRecord: ...

        def _set_function_member(self, current: FunctionRecord, key: str, value: Any) -> None: ...

    def _opt_dir(self, record: FunctionRecord) -> Path | None:
        """The merged tree of a version's layers, built if missing. A layer whose code is lost leaves the
        path unbuilt: its environments then fail to start, saying so, rather than run without the layer."""
        layers = used_layers(record.config)
        if not layers:
            return None
        try:
            return self.layers.opt_dir(layers)
        except OSError as exc:
            log.error(
                "the layers of function %s (version %s) cannot be shown at /opt: %s", record.name, record.version, exc
            )
            return self.layers.opt.directory(tree_digest(layers))

    def _layers_in_use(self) -> tuple[set[str], set[str]]:
        """The layer code and merged trees that some stored function version uses."""
        code: set[str] = set()
        trees: set[str] = set()
        # From the database, not the map: a function being created is stored before it is remembered.
        for record in self.repo.all_versions(None):
            layers = used_layers(record.config)
            if layers:
                code.update(layer.code_sha256 for layer in layers)
                trees.add(tree_digest(layers))
        return code, trees

    def _with_layers(self, config: dict[str, Any], code_sha256: str, code: bytes | None = None) -> dict[str, Any]:
        """`config` with the layer ARNs a request gave resolved to the versions they name, and the merged
        tree of them built; refused when the code and its layers pass Lambda's unzipped limit, or when the
        code (given when new) or a newly named layer fails the function's code signing configuration."""
        given = config.get("Layers")
        if given is not None and all(isinstance(item, str) for item in given):
            resolved = self.layers.resolve(given)
            config = {k: v for k, v in config.items() if k != "Layers"}
            if resolved:
                config["Layers"] = [layer.stored() for layer in resolved]
            self._vet(config, code, resolved)
        elif code is not None:
            self._vet(config, code, [])
        layers = used_layers(config)
        self._check_unzipped(code_sha256, layers)
        if layers:
            try:
                self.layers.opt_dir(layers)
            except OSError as exc:
                log.exception("merging layers for /opt failed")
                raise ServiceException(f"silo could not prepare the function's layers: {exc}") from exc
        return config

    def _functions_using(self, csc_arn: str) -> list[str]:
        return sorted(n for n, r in self._records.items() if r[LATEST].config.get("CodeSigningConfigArn") == csc_arn)

    def _vet(self, config: dict[str, Any], code: bytes | None, layers: list[UsedLayer] | None = None) -> None:
        """Check what a deployment brings against the function's code signing configuration, if it has one:
        the code (when given) and `layers` (default: all the configuration's layers)."""
        csc = config.get("CodeSigningConfigArn")
        if csc is None:
            return
        artifacts = [] if code is None else [("the function's code", code)]
        for layer in used_layers(config) if layers is None else layers:
            artifacts.append((f"layer version {layer.arn}", self.layers.code.read_blob(layer.code_sha256)))
        self.code_signing.check(csc, artifacts)

    def put_function_code_signing_config(self, function_name: str, body: dict[str, Any]) -> dict[str, str]:
        """PutFunctionCodeSigningConfig: deployments of the function are checked against it from now on."""
        arn = str_member(body, "CodeSigningConfigArn")
        if arn is None:
            raise validation.missing("codeSigningConfigArn")
        with self._write_lock:
            current = self._unqualified(function_name)
            stored = self.code_signing.require(arn)
            self._set_function_member(current, "CodeSigningConfigArn", stored)
        return {"CodeSigningConfigArn": stored, "FunctionName": current.name}

    def delete_function_code_signing_config(self, function_name: str) -> None:
        """DeleteFunctionCodeSigningConfig."""
        with self._write_lock:
            self._set_function_member(self._unqualified(function_name), "CodeSigningConfigArn", None)

    def _check_unzipped(self, code_sha256: str, layers: list[UsedLayer]) -> None:
        if not layers:
            return  # the package alone was measured as it was unpacked
        if code_sha256 not in self._unzipped:
            self._unzipped[code_sha256] = tree_size(self.code.directory(code_sha256))
        total = self._unzipped[code_sha256] + sum(layer.unzipped_size for layer in layers)
        if total > self.code.max_unzipped:
            raise InvalidParameterValueException(
                "Function code combined with layers exceeds the maximum allowed size of "
                f"{self.code.max_unzipped} bytes. The actual size is {total} bytes."
            )
