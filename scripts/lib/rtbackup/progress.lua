--- rtbackup.progress: one line that rewrites itself on a terminal (done/total, rate,
-- ETA); under cron (no terminal) it stays silent and the logs tell the story.
local host = require "rtbackup.host"

local progress = {}
progress.__index = progress

function progress.new(label, total)
    return setmetatable({label = label, total = total, done = 0, start = host.monotonic(),
                         last = 0, tty = host.isatty(2)}, progress)
end

function progress:add(n)
    self.done = self.done + n
    local now = host.monotonic()
    if self.tty and (now - self.last > 0.2 or self.done >= self.total) then
        self.last = now
        local elapsed = now - self.start
        local rate = elapsed > 0 and self.done / elapsed or 0
        local eta = rate > 0 and (self.total - self.done) / rate or 0
        io.stderr:write(string.format("\r%s: %d/%d instances, %.0f/s, ETA %ds   ", self.label,
                                      self.done, self.total, rate, math.floor(eta + 0.5)))
        io.stderr:flush()
    end
end

function progress:finish()
    if self.tty and self.last > 0 then io.stderr:write("\n") end
end

return progress
