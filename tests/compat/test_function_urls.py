"""Function URLs against a real `silo serve`: the configuration operations with boto3 (Lambda's shapes,
codes and messages, as recorded against AWS), and real HTTP calls to the URLs with urllib (the function
URL event, Lambda's answer rules, CORS, AWS_IAM signing, the 502 of a failed function)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from tests.compat.test_control_plane import error_of, unique
from tests.compat.test_versions import arn, code_of
from tests.support import create_python_function, signed_headers

HANDLER = """
import base64, json

def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "fail":
        raise RuntimeError("asked to fail")
    if mode == "plain":
        return [1, "two", {"three": 3}]
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if mode == "big":
        return "x" * (7 * 1024 * 1024)
    if mode == "cors":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "https://evil.example"}, "body": "{}"}
    if mode == "missing":
        return {"statusCode": 404, "body": "no such thing"}
    return {"statusCode": 200, "headers": {"x-echo": "yes"}, "cookies": ["session=abc; Path=/", "theme=dark"],
            "body": json.dumps({"event": event, "arn": context.invoked_function_arn})}
"""
PER_TENANT = {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}
QUALIFIER_PATTERN = r"((?!^\d+$)^[0-9a-zA-Z-_]+$)"


def call(url: str, data: bytes | None = None, method: str | None = None, **headers: str) -> tuple[int, Any, bytes]:
    """(status, headers, body) of an HTTP request, error statuses included."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def echoing(client: Any, name: str, **url: Any) -> str:
    create_python_function(client, name, HANDLER)
    out: str = client.create_function_url_config(FunctionName=name, **{"AuthType": "NONE", **url})["FunctionUrl"]
    return out


def event_of(body: bytes) -> dict[str, Any]:
    echoed: dict[str, Any] = json.loads(body)["event"]
    return echoed


# -- configuration ----------------------------------------------------------------------------------


def test_url_config_lifecycle(lambda_client: Any, silo_server: Any) -> None:
    name = unique("url")
    create_python_function(lambda_client, name, HANDLER)
    created = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    url = created["FunctionUrl"]
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == silo_server.endpoint
    assert parts.path.startswith("/url/") and parts.path.endswith("/") and len(parts.path.split("/")[2]) == 32
    assert (created["FunctionArn"], created["AuthType"]) == (arn(name), "NONE")
    # Create answers without LastModifiedTime and InvokeMode (AWS-recorded).
    assert "CreationTime" in created and "LastModifiedTime" not in created and "InvokeMode" not in created

    err = error_of(lambda: lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE"))
    assert code_of(err) == (
        "ResourceConflictException",
        409,
        f"Failed to create function url config for [functionArn = {arn(name)}]. Error message:  "
        "FunctionUrlConfig exists for this Lambda function",
    )
    got = lambda_client.get_function_url_config(FunctionName=name)
    assert (got["FunctionUrl"], got["InvokeMode"], got["CreationTime"]) == (url, "BUFFERED", created["CreationTime"])
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"], "MaxAge": 300}
    updated = lambda_client.update_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors)
    assert (updated["FunctionUrl"], updated["AuthType"], updated["Cors"]) == (url, "AWS_IAM", cors)
    assert "LastModifiedTime" in updated

    silo_server.restart()
    got = lambda_client.get_function_url_config(FunctionName=arn(name))
    assert (got["FunctionUrl"], got["AuthType"], got["Cors"]) == (url, "AWS_IAM", cors)
    listed = lambda_client.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [url]
    # Cors {} removes the CORS settings.
    assert "Cors" not in lambda_client.update_function_url_config(FunctionName=name, Cors={})

    deleted = lambda_client.delete_function_url_config(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    for err in (
        error_of(lambda: lambda_client.get_function_url_config(FunctionName=name)),
        error_of(lambda: lambda_client.delete_function_url_config(FunctionName=name)),
    ):
        assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    assert lambda_client.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []
    assert call(url)[0] == 404


def test_url_config_qualifiers_and_errors(lambda_client: Any) -> None:
    name = unique("urlq")
    create_python_function(lambda_client, name, HANDLER)
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    latest_url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    alias = lambda_client.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert alias["FunctionArn"] == arn(name, "live") and alias["FunctionUrl"] != latest_url
    assert lambda_client.get_function_url_config(FunctionName=f"{name}:live")["FunctionUrl"] == alias["FunctionUrl"]
    # Through the alias the call runs the alias's version.
    status, _, body = call(alias["FunctionUrl"])
    assert status == 200 and json.loads(body)["arn"] == arn(name, "live")

    page = lambda_client.list_function_url_configs(FunctionName=name, MaxItems=1)
    assert [c["FunctionArn"] for c in page["FunctionUrlConfigs"]] == [arn(name)]
    rest = lambda_client.list_function_url_configs(FunctionName=name, Marker=page["NextMarker"])
    assert [c["FunctionArn"] for c in rest["FunctionUrlConfigs"]] == [arn(name, "live")]
    assert "NextMarker" not in rest

    for qualifier in ("$LATEST", version):
        for op in (lambda_client.get_function_url_config, lambda_client.delete_function_url_config):
            err = error_of(lambda op=op, q=qualifier: op(FunctionName=name, Qualifier=q))
            assert code_of(err) == (
                "ValidationException",
                400,
                f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}",
            )
    err = error_of(
        lambda: lambda_client.create_function_url_config(FunctionName=name, Qualifier="nope", AuthType="NONE")
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, "Function does not exist")
    err = error_of(
        lambda: lambda_client.update_function_url_config(FunctionName=name, Qualifier="nope", AuthType="NONE")
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, "Function does not exist")
    err = error_of(lambda: lambda_client.get_function_url_config(FunctionName=name, Qualifier="nope"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    err = error_of(lambda: lambda_client.create_function_url_config(FunctionName=name + "-none", AuthType="NONE"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "Function does not exist")
    err = error_of(lambda: lambda_client.list_function_url_configs(FunctionName=name + "-none"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "Function does not exist")
    err = error_of(lambda: lambda_client.get_function_url_config(FunctionName=f"{name}:live", Qualifier="other"))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "The derived qualifier from the function name does not match the specified qualifier.",
    )
    err = error_of(lambda: lambda_client.update_function_url_config(FunctionName=name, AuthType="OPEN"))
    assert code_of(err) == (
        "ValidationException",
        400,
        "1 validation error detected: Value 'OPEN' at 'authType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [NONE, AWS_IAM]",
    )
    err = error_of(lambda: lambda_client.update_function_url_config(FunctionName=name, Cors={"MaxAge": 86401}))
    assert code_of(err)[:2] == ("ValidationException", 400)
    assert "at 'cors.maxAge'" in code_of(err)[2]
    err = error_of(lambda: lambda_client.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM"))
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert "RESPONSE_STREAM is not supported" in message
    assert lambda_client.get_function_url_config(FunctionName=name)["InvokeMode"] == "BUFFERED"

    # An alias's URL goes with the alias, and a function's with the function.
    lambda_client.delete_alias(FunctionName=name, Name="live")
    assert call(alias["FunctionUrl"])[0] == 404
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    err = error_of(lambda: lambda_client.get_function_url_config(FunctionName=name, Qualifier="live"))
    assert code_of(err)[:2] == ("ResourceNotFoundException", 404)
    lambda_client.delete_function(FunctionName=name)
    assert call(latest_url)[0] == 404


def test_a_per_tenant_function_gets_no_url(lambda_client: Any) -> None:
    name = unique("url-tenant")
    create_python_function(lambda_client, name, HANDLER, per_tenant=True)
    for auth in ("NONE", "AWS_IAM"):
        err = error_of(lambda a=auth: lambda_client.create_function_url_config(FunctionName=name, AuthType=a))
        code, status, message = code_of(err)
        assert (code, status) == ("InvalidParameterValueException", 400)
        assert message.startswith("Function URLs are not supported for functions with tenant isolation mode")
    assert lambda_client.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


# -- HTTP calls -------------------------------------------------------------------------------------


def test_the_event_of_a_call(lambda_client: Any) -> None:
    url = echoing(lambda_client, unique("url-event"))
    status, headers, body = call(
        url + "orders/42?x=1&x=2&empty=&name=a%20b",
        data=b'{"hello": "world"}',
        method="PUT",
        **{"Content-Type": "application/json", "Cookie": "a=1; b=2", "X-Custom": "v", "User-Agent": "silo-test"},
    )
    assert status == 200
    # The function's answer: its status, headers, cookies (a Set-Cookie each) and body.
    assert headers["x-echo"] == "yes" and headers["content-type"] == "application/json"
    assert headers.get_all("set-cookie") == ["session=abc; Path=/", "theme=dark"]
    assert headers["x-amzn-requestid"]
    event = event_of(body)
    url_id = urlsplit(url).path.split("/")[2]
    assert (event["version"], event["routeKey"], event["rawPath"]) == ("2.0", "$default", "/orders/42")
    assert event["rawQueryString"] == "x=1&x=2&empty=&name=a%20b"
    assert event["queryStringParameters"] == {"x": "1,2", "empty": "", "name": "a b"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "v" and event["headers"]["content-type"] == "application/json"
    assert (event["body"], event["isBase64Encoded"]) == ('{"hello": "world"}', False)
    context = event["requestContext"]
    assert context["http"] == {
        "method": "PUT",
        "path": "/orders/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "silo-test",
    }
    assert (context["apiId"], context["domainPrefix"], context["accountId"]) == (url_id, url_id, "anonymous")
    assert context["domainName"] == urlsplit(url).netloc
    assert context["requestId"] == headers["x-amzn-requestid"]
    assert isinstance(context["timeEpoch"], int) and context["time"].endswith(" +0000")
    assert "authorizer" not in context

    # No query, no cookies, no body: those members are absent; the root path is "/".
    event = event_of(call(url.rstrip("/"))[2])
    assert event["rawPath"] == "/" and event["rawQueryString"] == ""
    assert "queryStringParameters" not in event and "cookies" not in event and "body" not in event
    assert event["isBase64Encoded"] is False and event["requestContext"]["http"]["method"] == "GET"


def test_binary_bodies_travel_in_base64(lambda_client: Any) -> None:
    url = echoing(lambda_client, unique("url-binary"))
    data = bytes(range(256))
    event = event_of(call(url, data=data, **{"Content-Type": "application/octet-stream"})[2])
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == data
    # Text that is not UTF-8 cannot travel as text either.
    event = event_of(call(url, data="caf\u00e9".encode("latin-1"), **{"Content-Type": "text/plain"})[2])
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == "caf\u00e9".encode("latin-1")
    status, headers, body = call(url + "?mode=binary")
    assert (status, headers["content-type"], body) == (200, "application/octet-stream", data)


def test_answers_other_than_a_response_object(lambda_client: Any) -> None:
    url = echoing(lambda_client, unique("url-answers"))
    status, headers, body = call(url + "?mode=plain")
    assert (status, headers["content-type"], json.loads(body)) == (200, "application/json", [1, "two", {"three": 3}])
    status, _, body = call(url + "?mode=missing")
    assert (status, body) == (404, b"no such thing")
    # A function error, and an answer over Lambda's 6 MB, are a 502.
    for mode in ("fail", "big"):
        status, headers, body = call(url + f"?mode={mode}")
        assert status == 502, mode
        assert json.loads(body) == {"message": "Internal server error"}


def test_cors(lambda_client: Any) -> None:
    cors = {
        "AllowOrigins": ["https://app.example"],
        "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["x-custom"],
        "ExposeHeaders": ["x-echo"],
        "AllowCredentials": True,
        "MaxAge": 600,
    }
    url = echoing(lambda_client, unique("url-cors"), Cors=cors)
    # A preflight is answered without the function, whose answer would be the echo.
    status, headers, body = call(
        url,
        method="OPTIONS",
        Origin="https://app.example",
        **{"Access-Control-Request-Method": "POST"},
    )
    assert (status, body) == (200, b"")
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-headers"] == "x-custom"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-max-age"] == "600"
    # An answer to an allowed origin carries the configured headers, not the function's.
    status, headers, _ = call(url + "?mode=cors", Origin="https://app.example")
    assert headers.get_all("access-control-allow-origin") == ["https://app.example"]
    assert headers["access-control-expose-headers"] == "x-echo"
    status, headers, _ = call(url + "?mode=cors", Origin="https://other.example")
    assert status == 200 and "access-control-allow-origin" not in headers


def test_aws_iam_urls_take_signed_calls_only(lambda_client: Any, silo_server: Any) -> None:
    name = unique("url-iam")
    create_python_function(lambda_client, name, HANDLER)
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    path = urlsplit(url).path + "items?kind=a"
    status, _, body = call(url + "items?kind=a")
    assert status == 403
    assert json.loads(body)["message"].startswith("Missing Authentication Token")
    data = b'{"signed": true}'
    headers = signed_headers(silo_server.endpoint, "POST", path, data, {"Content-Type": "application/json"})
    status, _, body = call(silo_server.endpoint + path, data=data, method="POST", **headers)
    assert status == 200
    event = event_of(body)
    key = silo_server.credentials[0]
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == key
    assert event["requestContext"]["accountId"] == "000000000000"
    assert (event["rawPath"], event["body"]) == ("/items", '{"signed": true}')
    # A path with encoded characters is signed and checked as botocore canonicalises it.
    spaced = urlsplit(url).path + "a%20b/c%3Ad"
    status, _, body = call(silo_server.endpoint + spaced, **signed_headers(silo_server.endpoint, "GET", spaced))
    assert status == 200 and event_of(body)["rawPath"] == "/a%20b/c%3Ad"
    # The signature covers the body: another body is refused.
    status, _, _ = call(silo_server.endpoint + path, data=b'{"signed": false}', method="POST", **headers)
    assert status == 403
    lambda_client.update_function_url_config(FunctionName=name, AuthType="NONE")
    assert call(url + "items")[0] == 200


def test_a_url_of_no_function_is_not_found(silo_server: Any) -> None:
    status, _, body = call(f"{silo_server.endpoint}/url/{'x' * 32}/")
    assert status == 404 and "No function URL" in json.loads(body)["message"]


def test_the_aws_cli_manages_urls(lambda_client: Any, aws_cli: Any) -> None:
    name = unique("url-cli")
    create_python_function(lambda_client, name, HANDLER)
    created = aws_cli("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE")
    assert created.returncode == 0, created.stderr
    url = json.loads(created.stdout)["FunctionUrl"]
    listed = aws_cli("lambda", "list-function-url-configs", "--function-name", name, check=True)
    assert [c["FunctionUrl"] for c in json.loads(listed.stdout)["FunctionUrlConfigs"]] == [url]
    assert call(url)[0] == 200
    tenant = unique("url-cli-tenant")
    create_python_function(lambda_client, tenant, HANDLER, per_tenant=True)
    refused = aws_cli("lambda", "create-function-url-config", "--function-name", tenant, "--auth-type", "NONE")
    assert refused.returncode != 0
    assert "(InvalidParameterValueException)" in refused.stderr and "tenant isolation mode" in refused.stderr
    assert aws_cli("lambda", "delete-function-url-config", "--function-name", name).returncode == 0
    assert call(url)[0] == 404
