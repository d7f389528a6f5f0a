-- wrk script for the sustained-throughput scenarios: every request invokes the function as the next
-- tenant in turn, so the calls go round all tenants; threads interleave, so no two in-flight requests
-- of one thread name the same tenant while there are more tenants than connections.
-- Environment: SILO_FUNCTION, SILO_TENANTS (how many), SILO_PREFIX (tenant ids are PREFIX-0 ...).

local threads = {}
local function_name = os.getenv("SILO_FUNCTION")
local tenants = tonumber(os.getenv("SILO_TENANTS"))
local prefix = os.getenv("SILO_PREFIX")
local nthreads = 0

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
