-- A first look at the DEMO environment: what is configured, and the task scheduler
-- running several blocking jobs at once. (The full demo backup grows from here.)
local config = require "rtbackup.config"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local env = config.load(arg[1] or "DEMO")
print(env.name .. ": " .. env.description)
local function aliases(t)
    local names = {}
    for name, peer in pairs(t or {}) do names[#names + 1] = name .. " (" .. peer.type .. ")" end
    table.sort(names)
    return table.concat(names, ", ")
end
print("sources:        " .. aliases(env.sources))
print("backup targets: " .. aliases(env.backup_targets))

local started = os.time()
local results = task.map({"ARIA", "MIM", "MOSAIQ", "ORTHANC"}, function(name)
    task.pool_sleep(200) -- stands in for one association's work
    return name .. " ok"
end, {concurrency = 4})
log.info("demo jobs finished", {jobs = #results, seconds = os.time() - started})
