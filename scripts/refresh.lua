-- wrk script: every request presents a distinct refresh token and every
-- answer hands back the next one, so the pool never runs dry. The initial
-- pool is read from the file named by the environment variable TOKENS.
local pool = {}
local failures = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do
    pool[#pool + 1] = line
  end
end

function request()
  local token = table.remove(pool)
  if token == nil then token = "prt_pool-ran-dry" end
  return wrk.format("POST", "/auth/token",
    { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local next_token = body:match('"refresh_token":"(prt_[^"]+)"')
  if status == 200 and next_token then
    pool[#pool + 1] = next_token
  else
    failures = failures + 1
  end
end
