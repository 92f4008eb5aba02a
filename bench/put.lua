-- wrk script: PUT distinct chunks to objvault, every one checked for 200/201.
-- Chunk i is a 16-char hex counter followed by the bytes of BASE_FILE (minus 16);
-- its id (SHA-256) is line i of IDS_FILE, computed by the Python driver.
-- Each wrk thread takes every THREADS-th chunk, from chunk START (default 0). The driver sizes IDS_FILE so that
-- the run (-d) ends before the list does; past the end ids repeat (dedup hits).
-- With SIGS_FILE (S3), line i of it is "x-amz-date<TAB>Authorization" of a
-- SigV4 signature made by the driver for PUT URL_PREFIX..ids[i] with the
-- payload SHA-256 ids[i] (the body's own hash), so no hashing happens here.
local base_file = os.getenv("BASE_FILE")
local ids_file = os.getenv("IDS_FILE")
local prefix = os.getenv("URL_PREFIX")
local token = os.getenv("TOKEN") or ""
local nthreads = tonumber(os.getenv("THREADS"))
local sigs_file = os.getenv("SIGS_FILE") or ""

local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = io.open(base_file, "rb"); rest = f:read("*a"):sub(17); f:close()
  ids = {}
  for line in io.lines(ids_file) do ids[#ids + 1] = line end
  nexti = tid + 1 + (tonumber(os.getenv("START")) or 0)
  nresp, bad, sent, firstbad, firstbody = 0, 0, 0, 0, ""
  headers = {["Content-Type"] = "application/octet-stream"}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  sigs = load_sigs(sigs_file)
end

-- "date<TAB>authorization" lines of SIGS_FILE (nil without one)
function load_sigs(path)
  if path == "" then return nil end
  local out = {}
  for line in io.lines(path) do
    local date, auth = line:match("^([^\t]+)\t(.+)$")
    out[#out + 1] = {date, auth}
  end
  return out
end

function request()
  local i = nexti
  if i > #ids then i = ((i - 1) % #ids) + 1 end
  nexti = nexti + nthreads
  sent = sent + 1
  if sigs then
    headers["x-amz-date"], headers["Authorization"] = sigs[i][1], sigs[i][2]
    headers["x-amz-content-sha256"] = ids[i]
  end
  return wrk.format("PUT", prefix .. ids[i], headers, string.format("%016x", i - 1) .. rest)
end

function response(status, hdrs, body)
  if status ~= 201 and status ~= 200 then
    bad = bad + 1
    if firstbad == 0 then firstbad, firstbody = status, body:sub(1, 300) end
  end
  nresp = nresp + 1
end

function done(summary, latency, requests)
  local ok, errs, total = 0, 0, 0
  for _, t in ipairs(threads) do
    errs = errs + t:get("bad")
    total = total + t:get("nresp")
  end
  io.write(string.format("LUA responses=%d non2xx=%d\n", total, errs))
  for _, t in ipairs(threads) do
    if t:get("firstbad") ~= 0 then
      io.write(string.format("LUA first non-2xx: %d %s\n", t:get("firstbad"), t:get("firstbody")))
      break
    end
  end
end
