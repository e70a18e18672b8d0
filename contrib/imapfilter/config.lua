-- imapfilter configuration for a Torokiki gateway mailbox at a hosted provider.
--
--   imapfilter -c /etc/torokiki/imapfilter/config.lua
--
-- Every undeleted message in the mailbox (or only the unseen ones) is fetched
-- whole, piped to `torokiki-pipe --config FILE` exactly as Postfix would pipe
-- it, and deleted (\Deleted + EXPUNGE) only when the gateway exited 0
-- ("handled").  Exit 75 ("try again later"), any other exit status, a signal
-- or a failed write leave the message where it is for the next run.
--
-- No secret lives in this file.  Settings come from the environment or from a
-- KEY=value settings file (environment wins), see settings.env.example:
--
--   TOROKIKI_IMAP_SETTINGS       settings file (default /etc/torokiki/imapfilter.env,
--                                optional when it does not exist and was not named)
--   TOROKIKI_IMAP_SERVER         IMAP host                                 (required)
--   TOROKIKI_IMAP_PORT           port (default 993 with SSL, 143 without)
--   TOROKIKI_IMAP_SSL            auto (default: imaps), tls1.2, ..., or no (plain
--                                IMAP; STARTTLS is still used when offered)
--   TOROKIKI_IMAP_STARTTLS       yes (default) or no
--   TOROKIKI_IMAP_USER           login                                     (required)
--   TOROKIKI_IMAP_PASSWORD       password, or
--   TOROKIKI_IMAP_PASSWORD_FILE  a file whose first line is the password (one required)
--   TOROKIKI_IMAP_MAILBOX        mailbox to poll (default INBOX)
--   TOROKIKI_IMAP_SELECT         all (default: every undeleted message) or unseen
--   TOROKIKI_IMAP_TIMEOUT        seconds to wait for the IMAP server (default 60)
--   TOROKIKI_IMAP_PIPE           the torokiki-pipe program (default: torokiki-pipe on PATH)
--   TOROKIKI_IMAP_PIPE_CONFIG    its --config env file                     (required)
--   TOROKIKI_IMAP_PIPE_TIMEOUT   seconds before one gateway run is killed (default 600, 0 = none)
--   TOROKIKI_IMAP_MAX_DEFERRALS  stop this run after so many messages in a row were
--                                left (default 5, 0 = never): a website that is down
--                                then costs a few HTTP timeouts a run, not one per message
--   TOROKIKI_IMAP_DRY_RUN        yes: run the gateway with --dry-run (it prints what it
--                                would do, posts and sends nothing) and delete nothing.
--                                (imapfilter -n alone would NOT stop the gateway.)
--
-- Exit status of the imapfilter run: 0 when every message was handled or
-- deferred with 75; 1 when a message was left for any other reason (the
-- gateway was killed, timed out or could not be started); 78 for a settings
-- problem; imapfilter's own non-zero status when the IMAP server fails.
--
-- Why io.popen + write + close and not imapfilter's pipe_to(): pipe_to writes
-- with strlen() (the message is cut at the first NUL byte) and returns
-- pclose()>>8, so a gateway killed by a signal reads as exit 0 -- the message
-- would be deleted unhandled.  In Lua 5.2+ file:close() on a popen handle
-- returns  true|nil, "exit"|"signal", code;  Lua 5.1 returns only true.  This
-- file checks that at start and refuses to run where the status is not told.

local PREFIX = 'TOROKIKI_IMAP_'
local DEFAULT_SETTINGS = '/etc/torokiki/imapfilter.env'
local EX_TEMPFAIL = 75
local EX_CONFIG = 78

local function say(line)
    io.stdout:write('torokiki-imapfilter: ', line, '\n')
    io.stdout:flush()
end

local function quit(code, line)
    if line then
        io.stderr:write('torokiki-imapfilter: ', line, '\n')
        io.stderr:flush()
    end
    io.stdout:flush()
    os.exit(code, true)   -- true: close the Lua state, so the IMAP session logs out
end

-- ------------------------------------------------------------------ settings

local function read_settings_file(path)
    local stream = io.open(path, 'r')
    if stream == nil then return nil end
    local values, number = {}, 0
    for line in stream:lines() do
        number = number + 1
        line = line:gsub('\r$', '')
        if not line:match('^%s*$') and not line:match('^%s*#') then
            local key, value = line:match('^%s*export%s+([%w_]+)%s*=%s*(.-)%s*$')
            if key == nil then key, value = line:match('^%s*([%w_]+)%s*=%s*(.-)%s*$') end
            if key == nil then
                stream:close()
                quit(EX_CONFIG, path .. ' line ' .. number .. ': expected KEY=value')
            end
            local quote = value:sub(1, 1)
            if (quote == '"' or quote == "'") and #value >= 2 and value:sub(-1) == quote then
                value = value:sub(2, -2)
            end
            values[key] = value
        end
    end
    stream:close()
    return values
end

local named_settings = os.getenv(PREFIX .. 'SETTINGS')
local file_values = {}
if named_settings ~= nil and named_settings ~= '' then
    file_values = read_settings_file(named_settings)
    if file_values == nil then
        quit(EX_CONFIG, 'cannot read the settings file ' .. named_settings)
    end
else
    file_values = read_settings_file(DEFAULT_SETTINGS) or {}
end

local function setting(name, default)
    local value = os.getenv(PREFIX .. name)
    if value == nil or value == '' then value = file_values[PREFIX .. name] end
    if value == nil or value == '' then value = default end
    return value
end

local function required(name)
    local value = setting(name)
    if value == nil then quit(EX_CONFIG, PREFIX .. name .. ' is not set') end
    return value
end

local function number(name, default)
    local text = setting(name, default)
    local value = tonumber(text)
    if value == nil or value < 0 then
        quit(EX_CONFIG, PREFIX .. name .. ' must be a number of 0 or more, not ' .. tostring(text))
    end
    return value
end

local function yes(name, default)
    local text = setting(name, default):lower()
    if text == 'yes' or text == 'true' or text == '1' or text == 'on' then return true end
    if text == 'no' or text == 'false' or text == '0' or text == 'off' then return false end
    quit(EX_CONFIG, PREFIX .. name .. ' must be yes or no, not ' .. text)
end

local server = required('SERVER')
local username = required('USER')
local password = setting('PASSWORD')
local password_file = setting('PASSWORD_FILE')
if password == nil and password_file ~= nil then
    local stream = io.open(password_file, 'r')
    if stream == nil then quit(EX_CONFIG, 'cannot read ' .. PREFIX .. 'PASSWORD_FILE ' .. password_file) end
    password = (stream:read('*l') or ''):gsub('\r$', '')
    stream:close()
end
if password == nil or password == '' then
    -- Without one imapfilter would prompt on a terminal nobody is watching.
    quit(EX_CONFIG, PREFIX .. 'PASSWORD or ' .. PREFIX .. 'PASSWORD_FILE must be set')
end

local ssl = setting('SSL', 'auto')
if ssl:lower() == 'no' or ssl:lower() == 'none' or ssl:lower() == 'off' then ssl = nil end
local port = number('PORT', ssl and '993' or '143')
local mailbox_name = setting('MAILBOX', 'INBOX')
local which = setting('SELECT', 'all'):lower()
if which ~= 'all' and which ~= 'unseen' then
    quit(EX_CONFIG, PREFIX .. 'SELECT must be all or unseen, not ' .. which)
end
local pipe_program = setting('PIPE', 'torokiki-pipe')
local pipe_config = required('PIPE_CONFIG')
local pipe_timeout = number('PIPE_TIMEOUT', '600')
local max_deferrals = number('MAX_DEFERRALS', '5')
local dry_run = yes('DRY_RUN', 'no')

options.timeout = number('TIMEOUT', '60')
options.starttls = yes('STARTTLS', 'yes')
options.info = false        -- this file says what it does, one line a message
options.cache = false       -- each message is fetched once; keep none in memory
options.expunge = true      -- \Deleted is followed by EXPUNGE at once
options.close = false
options.create = false

-- ------------------------------------------------------------- the gateway

local function quoted(word)
    return "'" .. (word:gsub("'", "'\\''")) .. "'"
end

-- The gateway exits without reading its input when its configuration is
-- broken; `cat` then drains the rest, so that writing a large message never
-- ends in SIGPIPE (which would kill imapfilter itself).  The shell exits with
-- the gateway's status (128+N when the gateway was killed by signal N); the
-- IMAP password is not passed on to the gateway or to its sendmail.
local command = table.concat({
    'env -u ' .. PREFIX .. 'PASSWORD',
    pipe_timeout > 0 and ('timeout -k 10 ' .. string.format('%d', math.floor(pipe_timeout))) or '',
    quoted(pipe_program), '--config', quoted(pipe_config), dry_run and '--dry-run' or '',
    '; status=$?; cat >/dev/null; exit $status',
}, ' ')

-- How a popen handle's close() told the end of the child: "exit"|"signal", code.
local function ending(handle)
    local _, how, code = handle:close()
    if (how == 'exit' or how == 'signal') and type(code) == 'number' then return how, code end
    return nil, nil
end

do  -- Refuse to run on a Lua whose close() does not tell the exit status (5.1).
    local probe = io.popen('exit ' .. EX_TEMPFAIL, 'w')
    local how, code = nil, nil
    if probe ~= nil then how, code = ending(probe) end
    if how ~= 'exit' or code ~= EX_TEMPFAIL then
        quit(EX_CONFIG, 'io.popen():close() of this Lua (' .. _VERSION .. ') does not report '
             .. 'exit statuses (Lua 5.2 or later needed); refusing to delete anything')
    end
end

-- Runs the gateway on one raw message: wrote (boolean), write error, how, code.
local function gateway(raw)
    local handle, problem = io.popen(command, 'w')
    if handle == nil then return false, tostring(problem), nil, nil end
    local wrote, write_error = handle:write(raw)
    local how, code = ending(handle)
    return wrote ~= nil, write_error, how, code
end

local function message_id(raw)
    local head = raw:match('^(.-)\r?\n\r?\n') or raw
    local value = ('\n' .. head):match('\n[Mm][Ee][Ss][Ss][Aa][Gg][Ee]%-[Ii][Dd]:[ \t]*([^\r\n]*)')
    if value == nil or value == '' then return '-' end
    return value:sub(1, 200)
end

-- ------------------------------------------------------------------ the run

local account = IMAP {
    server = server,
    port = port,
    username = username,
    password = password,
    ssl = ssl,
}
local mailbox = account[mailbox_name]

local criteria = which == 'unseen' and 'UNDELETED UNSEEN' or 'UNDELETED'
local found = mailbox:send_query(criteria)
local state = account._account or {}
if state.selected ~= mailbox_name then
    quit(EX_CONFIG, 'cannot select ' .. mailbox_name .. ' as ' .. username .. '; nothing was piped')
end
if state.readonly == true then
    -- A handled message that cannot be deleted would be answered again every run.
    quit(EX_CONFIG, mailbox_name .. ' is read-only for ' .. username .. '; nothing was piped')
end

local uids = {}
for _, entry in ipairs(found) do
    local box, uid = entry[1], entry[2]
    if box == mailbox then table.insert(uids, uid) end
end
table.sort(uids)

local handled, deferred, troubled, in_a_row = 0, 0, 0, 0
for index, uid in ipairs(uids) do
    if max_deferrals > 0 and in_a_row >= max_deferrals then
        say(string.format('%d message(s) in a row were left; stopping, %d not tried this run',
                          in_a_row, #uids - index + 1))
        break
    end
    local raw = mailbox[uid]:fetch_message()
    if raw == nil then
        say(string.format('uid %d: gone before it could be fetched', uid))
    else
        local label = string.format('uid %d %s (%d bytes)', uid, message_id(raw), #raw)
        local wrote, write_error, how, code = gateway(raw)
        if wrote and how == 'exit' and code == 0 and dry_run then
            handled, in_a_row = handled + 1, 0
            say(label .. ': handled (exit 0) in a dry run, not deleted')
        elseif wrote and how == 'exit' and code == 0 then
            if mailbox:delete_messages({ { mailbox, uid } }) ~= true then
                -- The next run will pipe it again (a second reply); stop before more pile up.
                quit(1, label .. ': handled, but could not be deleted; stopping')
            end
            handled, in_a_row = handled + 1, 0
            say(label .. ': handled (exit 0), deleted')
        else
            in_a_row = in_a_row + 1
            local why
            if how == 'exit' then
                why = 'exit ' .. code
            elseif how == 'signal' then
                why = 'killed by signal ' .. code
            else
                why = 'no exit status'
            end
            if not wrote then why = why .. '; the message could not be written: ' .. tostring(write_error) end
            if how == 'exit' and code == EX_TEMPFAIL and wrote then
                deferred = deferred + 1
                say(label .. ': deferred (exit 75), left in ' .. mailbox_name)
            else
                troubled = troubled + 1
                say(label .. ': left in ' .. mailbox_name .. ' (' .. why .. ')')
            end
        end
    end
end

say(string.format('%d handled, %d deferred, %d left with errors, %d found in %s',
                  handled, deferred, troubled, #uids, mailbox_name))
if troubled > 0 then quit(1) end
