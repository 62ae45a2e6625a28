-- Parallel C-FINDs and C-MOVEs through task.map against the testbed (Orthanc main,
-- dcmqrscp "ARIA"). Usage: rtbackup run find_move.lua TESTBED_ENV MODE CONCURRENCY COUNT
-- MODE find: COUNT STUDY-level C-FINDs to Orthanc; move: every series of ARIA moved
-- to Orthanc (COUNT ignored). Prints the wall time in ms.
local dicom = require "rtbackup.dicom"
local task = require "rtbackup.task"
local host = require "rtbackup.host"

local envfile, mode, concurrency, count = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4] or "64")
local tb = {}
for line in io.lines(envfile) do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k then tb[k] = v end
end
local function peer(aet, port)
    return dicom.peer{aet = aet, host = tb.HOST, port = tonumber(port), calling_aet = tb.SCU_AET}
end
local main, aria = peer(tb.MAIN_AET, tb.MAIN_PORT), peer(tb.ARIA_AET, tb.ARIA_PORT)

local jobs, fn = {}, nil
if mode == "find" then
    for i = 1, count do jobs[i] = i end
    fn = function() return #main:find{level = "STUDY", PatientID = "*", StudyInstanceUID = ""} end
else
    jobs = aria:find{level = "SERIES", StudyInstanceUID = "", SeriesInstanceUID = "", PatientID = "*"}
    -- dcmqrscp answers SERIES queries only under a study: collect them per study.
    if #jobs == 0 then
        for _, st in ipairs(aria:find{level = "STUDY", PatientID = "*", StudyInstanceUID = ""}) do
            for _, se in ipairs(aria:find{level = "SERIES", StudyInstanceUID = st.StudyInstanceUID, SeriesInstanceUID = ""}) do
                jobs[#jobs + 1] = se
            end
        end
    end
    fn = function(s)
        local r = aria:move{level = "SERIES", StudyInstanceUID = s.StudyInstanceUID,
                            SeriesInstanceUID = s.SeriesInstanceUID, destination = tb.MAIN_AET}
        assert(r.failed == 0)
        return r.completed
    end
end
local t0 = host.monotonic()
task.map(jobs, fn, {concurrency = concurrency})
io.stdout:write(string.format("%d %d\n", math.floor((host.monotonic() - t0) * 1000 + 0.5), #jobs))
