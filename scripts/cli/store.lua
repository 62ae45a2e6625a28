--- C-STORE files (or a directory of them) to a DICOM peer
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("store", [[
Sends DICOM files (C-STORE). A directory is walked recursively, links followed (each
directory once; a DICOMDIR in it, the index of a CD or USB export, is skipped and said).
Every file has its own outcome: stored, refused by the peer, unreadable (not DICOM,
truncated, a dangling link, no permission: never sent) or
not sent (the association was lost and the peer kept failing). A lost association is
reopened for the remaining files. Compressed files are sent as they are. Exit 1 when
anything was not stored.

Several associations at once (Orthanc stores them in parallel): the files go in batches
of consecutive files, one association each. By default as many at once as make it faster
(adaptive, never above the peer's max_associations, 8 for a peer given by address; the
choices are logged); --associations N fixes the number (1: one association, as storescu).
  rtbackup store --env UCLA --peer ORTHANC_MAIN --filepath /data/export
  rtbackup store --aet ME --aec ORTHANC --host 10.0.0.9 --port 4242 --filepath ./ct --associations 4]], dc.EXIT_CODES)
dc.add_peer_options(parser)
parser:option("--filepath", "a DICOM file or a directory"):count("+")
parser:option("--max-reconnects", "associations lost in a row before the rest is given up", "3")
      :convert(cli.whole_number("--max-reconnects", 0))
parser:option("--associations", "associations at once (default: adaptive up to the peer's max_associations)")
      :convert(cli.whole_number("--associations", 1))
dc.add_format_option(parser)
local args = cli.parse(parser, dc.dcmtk_args({...}))

return dc.run(function()
    local peer, env = dc.peer(args)
    -- An environment's peer keeps its configured ceiling (and adaptive_associations);
    -- a peer given by address takes --associations as asked.
    local adaptive = true
    if env and args.peer then
        adaptive = require("rtbackup.settings").get(env, "adaptive_associations", args.peer)
    elseif args.associations and args.associations > peer.limiter.cap then
        peer.limiter.cap = args.associations
    end
    local files = dc.files_to_store(args.filepath)
    -- On a terminal, one progress line rewriting itself; cleared before the report.
    local tty = require("rtbackup.host").isatty(2)
    local r = require("rtbackup.parallel_store").store(peer, files, {
        associations = args.associations, adaptive = adaptive,
        max_reconnects = args.max_reconnects, progress = tty})
    if tty then io.stderr:write("\r\27[K") end
    local label = {refused = "refused", unreadable = "unreadable", not_sent = "not sent"}
    for _, item in ipairs(r.items) do
        if not item.ok then
            local message = type(item.error) == "table" and item.error.message or tostring(item.error)
            local path = item.path or "?"
            if message:sub(1, #path + 2) == path .. ": " then message = message:sub(#path + 3) end
            io.stderr:write(label[item.outcome] or item.outcome, ": ", path, ": ", message, "\n")
        end
    end
    if r.error then io.stderr:write("error: ", tostring(r.error), "\n") end
    if r.reconnects > 0 then
        io.stderr:write(string.format("%d association%s lost and reopened%s\n", r.reconnects,
                                      r.reconnects == 1 and " was" or "s were",
                                      r.breaker_open and "; the peer kept failing, the rest was not sent" or ""))
    end
    dc.print_rows({r}, {"stored", "refused", "unreadable", "not_sent", "failed"}, args.format)
    return r.failed == 0 and cli.EXIT.ok or cli.EXIT.failure
end)
