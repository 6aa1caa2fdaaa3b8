-- wrk: each request logs in with the next ID token of TOKENS_FILE (lines
-- of `Authorization` values, made by oidc-tokens.mjs), so every login is a
-- cold verification: each thread walks its own share of the list.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
  thread:set("nthreads", threads)
end
local headers = {}
local i, first, last = 0, 1, 1
function init(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    headers[#headers + 1] = line
  end
  local share = math.floor(#headers / tonumber(os.getenv("WRK_THREADS")))
  first = tid * share + 1
  last = first + share - 1
  i = first - 1
end
function request()
  i = i + 1
  if i > last then i = first end
  wrk.headers["Authorization"] = headers[i]
  return wrk.format("GET", wrk.path)
end
