-- wrk script: GET chunks by id (ids from IDS_FILE, first COUNT lines), round robin per thread.
local ids_file = os.getenv("IDS_FILE")
local prefix = os.getenv("URL_PREFIX")
local token = os.getenv("TOKEN")
local count = tonumber(os.getenv("COUNT"))
local nthreads = tonumber(os.getenv("THREADS"))
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  ids = {}
  for line in io.lines(ids_file) do
    if #ids >= count then break end
    ids[#ids + 1] = line
  end
  nexti = tid + 1
  headers = {}
  if token ~= nil and token ~= "" then headers["Authorization"] = "Bearer " .. token end
end
function request()
  local i = ((nexti - 1) % #ids) + 1
  nexti = nexti + nthreads
  return wrk.format("GET", prefix .. ids[i], headers)
end
-- No response() callback: it makes wrk copy every body into Lua and halves its
-- throughput. Errors are wrk's own "Non-2xx or 3xx responses" count.
