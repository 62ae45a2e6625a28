--- C-STORE files (or a directory of them) to a DICOM peer
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("store", [[
Sends DICOM files over one association (C-STORE). A directory is walked
recursively. A file that is not DICOM or is refused fails alone; the rest are sent.
  rtbackup store --env UCLA --peer ORTHANC_MAIN --filepath /data/export]], dc.EXIT_CODES)
dc.add_peer_options(parser)
parser:option("--filepath", "a DICOM file or a directory"):count("+")
dc.add_format_option(parser)
local args = cli.parse(parser, {...})

local function files_under(path)
    local files = {}
    local p = io.popen("find '" .. path:gsub("'", "'\\''") .. "' -type f 2>/dev/null | sort")
    for line in p:lines() do files[#files + 1] = line end
    p:close()
    return files
end

return dc.run(function()
    local peer = dc.peer(args)
    local files = {}
    for _, path in ipairs(args.filepath) do
        local found = files_under(path)
        if #found == 0 then
            require("rtbackup.error").raise{kind = "usage", message = "--filepath " .. path .. ": no such file or directory (or it is empty)"}
        end
        for _, f in ipairs(found) do files[#files + 1] = f end
    end
    local r = peer:store(files)
    for _, item in ipairs(r.items) do
        if not item.ok then io.stderr:write("not stored: ", item.path or "?", ": ", tostring(item.error), "\n") end
    end
    if r.error then io.stderr:write("error: ", tostring(r.error), "\n") end
    dc.print_rows({{stored = r.stored, failed = r.failed}}, {"stored", "failed"}, args.format)
    return r.failed == 0 and cli.EXIT.ok or cli.EXIT.failure
end)
