-- wrk script: GET chunks by id (ids from IDS_FILE, first COUNT lines), round robin per thread.
-- With SIGS_FILE (S3), line i of it signs the GET of line i (see put.lua).
local ids_file = os.getenv("IDS_FILE")
local prefix = os.getenv("URL_PREFIX")
local token = os.getenv("TOKEN")
local count = tonumber(os.getenv("COUNT"))
local nthreads = tonumber(os.getenv("THREADS"))
local sigs_file = os.getenv("SIGS_FILE") or ""
local EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
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
  if sigs_file ~= "" then
    sigs = {}
    for line in io.lines(sigs_file) do
      if #sigs >= count then break end
      local date, auth = line:match("^([^\t]+)\t(.+)$")
      sigs[#sigs + 1] = {date, auth}
    end
    headers["x-amz-content-sha256"] = EMPTY_SHA256
  end
end
function request()
  local i = ((nexti - 1) % #ids) + 1
  nexti = nexti + nthreads
  if sigs then headers["x-amz-date"], headers["Authorization"] = sigs[i][1], sigs[i][2] end
  return wrk.format("GET", prefix .. ids[i], headers)
end
-- No response() callback: it makes wrk copy every body into Lua and halves its
-- throughput. Errors are wrk's own "Non-2xx or 3xx responses" count.
