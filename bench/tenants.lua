-- wrk script for the sustained-throughput scenarios: every request invokes the function as the next
-- tenant in turn, so the calls go round all tenants; threads interleave, so no two in-flight requests
-- of one thread name the same tenant while there are more tenants than connections.
-- Environment: SILO_FUNCTION, SILO_TENANTS (how many), SILO_PREFIX (tenant ids are PREFIX-0 ...), and
-- SILO_REQUESTS: a file of whole requests, one per tenant in order, separated by "\n\0\n", signed ahead
-- by bench/run.py (wrk's Lua has no HMAC); without it the requests are unsigned (a server run --auth none).

local threads = {}
local function_name = os.getenv("SILO_FUNCTION")
local tenants = tonumber(os.getenv("SILO_TENANTS"))
local prefix = os.getenv("SILO_PREFIX")
local nthreads = 0
local signed = nil

function init(args)
  local file = os.getenv("SILO_REQUESTS")
  if file == nil or file == "" then
    return
  end
  local f = assert(io.open(file, "rb"))
  local all = f:read("*a")
  f:close()
  signed = {}
  local start = 1
  while true do
    local i, j = string.find(all, "\n\0\n", start, true)
    if i == nil then
      table.insert(signed, string.sub(all, start))
      break
    end
    table.insert(signed, string.sub(all, start, i - 1))
    start = j + 1
  end
end

function setup(thread)
  thread:set("id", nthreads)
  nthreads = nthreads + 1
  thread:set("stride", 0)  -- set for real once every thread exists, below
  table.insert(threads, thread)
  for _, t in ipairs(threads) do
    t:set("stride", nthreads)
  end
end

local counter = 0

function request()
  local n = (counter * stride + id) % tenants
  counter = counter + 1
  if signed ~= nil then
    return signed[n + 1]
  end
  local path = "/2015-03-31/functions/" .. function_name .. "/invocations"
  return wrk.format("POST", path, { ["X-Amz-Tenant-Id"] = prefix .. "-" .. n, ["Content-Type"] = "application/json" }, "{}")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
