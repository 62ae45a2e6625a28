--- rtbackup.progress: how far a long piece of work is. On a terminal one line rewrites
-- itself (done/total, rate, ETA); without one (cron, systemd) a log line says the same
-- every `interval` seconds (setting progress_interval), so a multi-hour first backup
-- is never silent.
local host = require "rtbackup.host"
local log = require "rtbackup.log"

local progress = {}
progress.__index = progress

--- progress.new(label, total, {unit = "instances", interval = 60})
function progress.new(label, total, opts)
    opts = opts or {}
    local now = host.monotonic()
    return setmetatable({label = label, total = total, done = 0, start = now, last = 0,
                         logged = now, unit = opts.unit or "instances", interval = opts.interval or 60,
                         tty = host.isatty(2)}, progress)
end

local function eta_text(seconds)
    seconds = math.floor(seconds + 0.5)
    if seconds >= 3600 then return string.format("%dh%02dm", seconds // 3600, seconds % 3600 // 60) end
    if seconds >= 60 then return string.format("%dm%02ds", seconds // 60, seconds % 60) end
    return seconds .. "s"
end

function progress:add(n)
    self.done = self.done + n
    local now = host.monotonic()
    local elapsed = now - self.start
    local rate = elapsed > 0 and self.done / elapsed or 0
    local eta = rate > 0 and math.max(0, self.total - self.done) / rate or 0
    if self.tty then
        if now - self.last > 0.2 or self.done >= self.total then
            self.last = now
            io.stderr:write(string.format("\r%s: %d/%d %s, %.0f/s, ETA %s   ", self.label, self.done, self.total,
                                          self.unit, rate, eta_text(eta)))
            io.stderr:flush()
        end
    elseif now - self.logged >= self.interval then
        self.logged = now
        log.info("progress", {work = self.label, done = self.done, total = self.total, unit = self.unit,
                              rate_per_second = math.floor(rate * 10 + 0.5) / 10, eta = eta_text(eta)})
    end
end

function progress:finish()
    if self.tty and self.last > 0 then io.stderr:write("\n") end
end

return progress
