"""Every route the server answers, in one table: `silo serve` builds its app from it, and
docs/openapi.yaml describes it (a unit test holds the two to each other)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from silo.api import code_signing as code_signing_routes
from silo.api import events as event_routes
from silo.api import function_urls as url_door
from silo.api import functions as function_routes
from silo.api import gateway as gateway_routes
from silo.api import health, tenant_keys
from silo.api import invoke as invoke_routes
from silo.api import keys as key_routes
from silo.api import layers as layer_routes
from silo.api import telemetry as telemetry_routes
from silo.api import unserved as unserved_routes
from silo.api import url_configs as url_config_routes
from silo.control.code_signing import CodeSigningService
from silo.control.event_config import EventInvokeConfigService
from silo.control.functions import FunctionService
from silo.control.keys import KeyService
from silo.control.layers import LayerService
from silo.credentials.tokens import TokenSigner
from silo.events.dispatcher import Dispatcher
from silo.telemetry.recorder import Telemetry


def api_routes(
    functions: FunctionService,
    event_configs: EventInvokeConfigService,
    dispatcher: Dispatcher,
    telemetry: Telemetry,
    invoke: invoke_routes.InvokeEndpoint,
    readiness: health.Readiness,
    keys: KeyService,
    layers: LayerService,
    code_signing: CodeSigningService,
    presign: function_routes.Presigner | None = None,
    gateway: gateway_routes.GatewayEndpoint | None = None,
    tokens: TokenSigner | None = None,
    function_urls: url_door.FunctionUrlEndpoint | None = None,
) -> list[BaseRoute]:
    """Lambda's REST-JSON routes and silo's own (`/silo/v1/...`, `/metrics`, `/healthz`, `/readyz`,
    `/.well-known/jwks.json`). `presign` signs GetFunction's Code.Location for its caller (None: plain URLs,
    no authentication); `tokens` signs the tenant tokens, whose public keys are published."""
    return [
        *health.routes(readiness),
        *function_routes.routes(functions, presign),
        *unserved_routes.routes(functions),
        *url_config_routes.routes(functions),
        *layer_routes.routes(layers, presign),
        *code_signing_routes.routes(code_signing),
        *key_routes.routes(keys),
        invoke_routes.route(invoke),
        *event_routes.routes(event_configs, dispatcher),
        *telemetry_routes.routes(functions, telemetry),
        *(gateway_routes.routes(gateway) if gateway is not None else []),
        *(tenant_keys.routes(tokens.jwks) if tokens is not None else []),
        *(url_door.routes(function_urls) if function_urls is not None else []),
    ]
