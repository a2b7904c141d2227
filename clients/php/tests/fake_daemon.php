<?php

/*
 * A scripted stand-in for apnsd, for the unit tests.
 *
 *   php tests/fake_daemon.php SOCKET SCRIPT_JSON LOGFILE
 *
 * Listens on SOCKET, prints "READY" on stdout, then serves connections one
 * after another with plain blocking I/O: read a line, write its answer. (That
 * is deliberate: a client that writes everything before reading would deadlock
 * against it, which the pipelining test relies on.) Every received line is
 * appended to LOGFILE as "<connection number>\t<unix time read>\t<line>".
 *
 * SCRIPT_JSON: {"connections": [spec for 1st connection, spec for 2nd, ...],
 *               "default": spec for the rest}
 * A spec is an object; all keys are optional:
 *   answer_n      answer this many requests, then do "after" (default: all)
 *   after         "close": close right after the last answer;
 *                 "close_on_next": read one more line, then close unanswered;
 *                 "silent": keep reading, never answer again
 *   garbage       answer every request with this raw line instead
 *   wrong_id      answer with id + 1000
 *   no_id         leave the id out of answers
 *   reverse       collect this many requests, answer them in reverse order
 *   delay         seconds to sleep before each answer
 *   byte_by_byte  write answers one byte at a time
 *   crlf          end answers with \r\n and put an empty line before each
 *   pad           add a "pad" string of this many bytes to each answer
 *   error         answer every send with {"ok":false,"error":<this>} (no token logic)
 *   answer        answer every send with this object (plus the id)
 *   hangup_after_reading  read this many lines, answer none, close (a daemon going
 *                 away mid-pipeline)
 *   no_deadline_field  refuse any request with "deadline" like an apnsd older than
 *                 protocol 1.1 (bad_request: unknown field "deadline")
 *
 * Protocol 1.1, on every connection: a request read after its "deadline" is
 * answered expired; "tokens" is a multicast (per-token results by the token
 * rules below; "wait": false -> {"ok":true,"queued":N} when every token is
 * taken, else, as apnsd answers, {"ok":false,"queued":N,"sent":0,"failed":M,
 * "results":[..]}: invalid tokens and retry hooks refuse their own entry, the
 * others are {"token":..,"ok":true,"queued":true}); "channel_id" is a broadcast send
 * (200 for a channel that exists, else 400 BadChannelId); channel_create,
 * channel_get, channel_list, channel_delete keep channels per (app, env).
 *
 * Retry hooks by token, counted per token over the fake's life (single sends
 * and each token of a multicast): "ee5d<k>..." answers shutting_down
 * (retryable) the first k times; "ee9f<k>..." queue_full; "ee0a<k>..."
 * unavailable; "ee70..." always timeout (retryable, not retried by clients).
 *
 * Send answers by token (after stripping "<", ">" and whitespace):
 *   not even-length hex -> error invalid_token; "0410..." -> 410 Unregistered
 *   with timestamp; "0400..." -> 400 BadDeviceToken; "0429..." -> 429;
 *   "wait": false -> queued; anything else -> 200 with a UUID apns_id.
 * Every send answer carries "received": the request as decoded, so tests can
 * check what the client sent.
 */

if ($argc < 4) {
    fwrite(STDERR, "usage: fake_daemon.php SOCKET SCRIPT_JSON LOGFILE\n");
    exit(2);
}
[$_, $socketPath, $scriptJson, $logFile] = $argv;
$script = json_decode($scriptJson, true);
if (!is_array($script)) {
    fwrite(STDERR, "bad script JSON\n");
    exit(2);
}

@unlink($socketPath);
$server = stream_socket_server('unix://' . $socketPath, $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "cannot listen on $socketPath: $errstr\n");
    exit(1);
}
$log = fopen($logFile, 'ab');
fwrite(STDOUT, "READY\n");
fflush(STDOUT);

$hookCounts = []; // token -> times a retry hook saw it
$channels = [];   // "app/env" -> [channel id => storage]
$connNo = 0;
while (true) {
    $conn = @stream_socket_accept($server, 3600);
    if ($conn === false) {
        continue;
    }
    $connNo++;
    $spec = $script['connections'][$connNo - 1] ?? ($script['default'] ?? []);
    serve($conn, $spec, $connNo, $log);
    if (is_resource($conn)) {
        fclose($conn);
    }
}

function serve($conn, array $spec, int $connNo, $log): void
{
    stream_set_blocking($conn, true);
    $answered = 0;
    $limit = $spec['answer_n'] ?? PHP_INT_MAX;
    $after = $spec['after'] ?? 'close';
    $pending = [];
    $hangup = $spec['hangup_after_reading'] ?? null;
    $read = 0;
    while (true) {
        if ($answered >= $limit && $after === 'close') {
            return;
        }
        $line = fgets($conn);
        if ($line === false) {
            return; // EOF
        }
        fwrite($log, $connNo . "\t" . sprintf('%.6f', microtime(true)) . "\t" . rtrim($line, "\n") . "\n");
        fflush($log);
        if (trim($line) === '') {
            continue;
        }
        $read++;
        if ($hangup !== null) {
            if ($read >= $hangup) {
                return;
            }
            continue;
        }
        if ($answered >= $limit) {
            if ($after === 'close_on_next') {
                return;
            }
            continue; // silent
        }
        $pending[] = $line;
        $reverse = $spec['reverse'] ?? 0;
        if ($reverse > 0 && count($pending) < $reverse) {
            continue;
        }
        if ($reverse > 0) {
            $pending = array_reverse($pending);
        }
        foreach ($pending as $req) {
            if (!empty($spec['delay'])) {
                usleep((int) ($spec['delay'] * 1000000));
            }
            $out = answerLine($req, $spec);
            if (!empty($spec['crlf'])) {
                $out = "\r\n" . $out . "\r\n";
            } else {
                $out .= "\n";
            }
            if (!empty($spec['byte_by_byte'])) {
                for ($i = 0, $n = strlen($out); $i < $n; $i++) {
                    fwrite($conn, $out[$i]);
                    fflush($conn);
                    usleep(200);
                }
            } else {
                writeAll($conn, $out);
            }
            $answered++;
        }
        $pending = [];
    }
}

function writeAll($conn, string $data): void
{
    while ($data !== '') {
        $n = @fwrite($conn, $data);
        if ($n === false || $n === 0) {
            return;
        }
        $data = substr($data, $n);
    }
}

function answerLine(string $line, array $spec): string
{
    if (isset($spec['garbage'])) {
        return $spec['garbage'];
    }
    $req = json_decode($line, true);
    if (!is_array($req)) {
        return json_encode(['ok' => false, 'error' => 'bad_json', 'message' => 'invalid JSON', 'retryable' => false]);
    }
    $resp = answer($req, $spec);
    if (array_key_exists('id', $req) && empty($spec['no_id'])) {
        $id = $req['id'];
        if (!empty($spec['wrong_id'])) {
            $id = is_int($id) ? $id + 1000 : $id . 'x';
        }
        $resp = ['id' => $id] + $resp;
    }
    if (!empty($spec['pad'])) {
        $resp['pad'] = str_repeat('p', (int) $spec['pad']);
    }

    return json_encode($resp, JSON_UNESCAPED_SLASHES);
}

function answer(array $req, array $spec): array
{
    $op = $req['op'] ?? 'send';
    if (array_key_exists('deadline', $req)) {
        if (!empty($spec['no_deadline_field'])) {
            return ['ok' => false, 'error' => 'bad_request', 'message' => 'unknown field "deadline"', 'retryable' => false];
        }
        if (!is_int($req['deadline']) || $req['deadline'] < microtime(true) * 1000) {
            return ['ok' => false, 'error' => 'expired', 'message' => 'read after its deadline; not sent', 'retryable' => false];
        }
    }
    if (strncmp($op, 'channel_', 8) === 0) {
        return channelOp($op, $req);
    }
    switch ($op) {
        case 'ping':
            return ['ok' => true, 'pong' => true, 'version' => 'fake-1'];
        case 'status':
            return ['ok' => true, 'apps' => ['demo' => ['sandbox' => ['state' => 'connected']]]];
        case 'reload':
            return ['ok' => true];
        case 'send':
            break;
        default:
            return ['ok' => false, 'error' => 'unknown_op', 'message' => "unknown op $op", 'retryable' => false];
    }
    if (isset($spec['error'])) {
        return ['ok' => false, 'error' => $spec['error'], 'message' => 'scripted', 'retryable' => true];
    }
    if (isset($spec['answer'])) {
        return $spec['answer'];
    }
    if (array_key_exists('tokens', $req)) {
        return multicast($req);
    }
    if (array_key_exists('channel_id', $req)) {
        global $channels;
        $key = ($req['app'] ?? '') . '/' . ($req['env'] ?? '');
        if (isset($channels[$key][$req['channel_id']])) {
            return ['ok' => true, 'status' => 200, 'apns_id' => uuid(), 'received' => $req];
        }

        return ['ok' => false, 'status' => 400, 'reason' => 'BadChannelId', 'apns_id' => uuid(), 'received' => $req];
    }
    $hooked = retryHook(preg_replace('/[<>\s]/', '', (string) ($req['token'] ?? '')));
    if ($hooked !== null) {
        return $hooked + ['received' => $req];
    }
    $token = preg_replace('/[<>\s]/', '', (string) ($req['token'] ?? ''));
    if ($token === '' || strlen($token) % 2 !== 0 || !ctype_xdigit($token)) {
        return ['ok' => false, 'error' => 'invalid_token', 'message' => 'token is not hex', 'retryable' => false, 'received' => $req];
    }
    if (isset($req['wait']) && $req['wait'] === false) {
        return ['ok' => true, 'queued' => true, 'received' => $req];
    }
    $uuid = sprintf('%08X-%04X-%04X-%04X-%012X', mt_rand(), mt_rand(0, 0xffff), mt_rand(0, 0xffff), mt_rand(0, 0xffff), mt_rand());
    switch (strtolower(substr($token, 0, 4))) {
        case '0410':
            return ['ok' => false, 'status' => 410, 'reason' => 'Unregistered', 'apns_id' => $uuid, 'timestamp' => 1700000000123, 'received' => $req];
        case '0400':
            return ['ok' => false, 'status' => 400, 'reason' => 'BadDeviceToken', 'apns_id' => $uuid, 'received' => $req];
        case '0429':
            return ['ok' => false, 'status' => 429, 'reason' => 'TooManyRequests', 'apns_id' => $uuid, 'received' => $req];
    }

    return ['ok' => true, 'status' => 200, 'apns_id' => $uuid, 'received' => $req];
}

function uuid(): string
{
    return sprintf('%08X-%04X-%04X-%04X-%012X', mt_rand(), mt_rand(0, 0xffff), mt_rand(0, 0xffff), mt_rand(0, 0xffff), mt_rand());
}

function retryHook(string $token): ?array
{
    global $hookCounts;
    $token = strtolower($token);
    $prefix = substr($token, 0, 4);
    if (!in_array($prefix, ['ee5d', 'ee9f', 'ee0a', 'ee70'], true)) {
        return null;
    }
    if ($prefix === 'ee70') {
        return ['ok' => false, 'error' => 'timeout', 'message' => 'no answer from APNs', 'retryable' => true];
    }
    $times = hexdec($token[4]);
    $seen = $hookCounts[$token] ?? 0;
    $hookCounts[$token] = $seen + 1;
    if ($seen >= $times) {
        return null;
    }
    $code = ['ee5d' => 'shutting_down', 'ee9f' => 'queue_full', 'ee0a' => 'unavailable'][$prefix];

    return ['ok' => false, 'error' => $code, 'message' => 'fake ' . $code, 'retryable' => true];
}

function tokenEntry($raw): array
{
    $token = strtolower(preg_replace('/[<>\s]/', '', (string) $raw));
    if ($token === '' || strlen($token) % 2 !== 0 || !ctype_xdigit($token)) {
        return ['token' => $raw, 'ok' => false, 'error' => 'invalid_token', 'message' => 'token is not hex', 'retryable' => false];
    }
    $hooked = retryHook($token);
    if ($hooked !== null) {
        return ['token' => $token] + $hooked;
    }
    switch (substr($token, 0, 4)) {
        case '0410':
            return ['token' => $token, 'ok' => false, 'status' => 410, 'reason' => 'Unregistered', 'apns_id' => uuid(), 'timestamp' => 1700000000123];
        case '0400':
            return ['token' => $token, 'ok' => false, 'status' => 400, 'reason' => 'BadDeviceToken', 'apns_id' => uuid()];
    }

    return ['token' => $token, 'ok' => true, 'status' => 200, 'apns_id' => uuid()];
}

function multicast(array $req): array
{
    $tokens = $req['tokens'];
    if (!is_array($tokens) || count($tokens) < 1 || count($tokens) > 1000) {
        return ['ok' => false, 'error' => 'bad_request', 'message' => 'tokens must be a list of 1 to 1000 tokens', 'retryable' => false];
    }
    if (isset($req['app']) && $req['app'] !== 'demo') {
        return ['ok' => false, 'error' => 'unknown_app', 'message' => 'no such app', 'retryable' => false];
    }
    if (isset($req['wait']) && $req['wait'] === false) {
        return queuedMulticast($tokens);
    }
    $results = array_map('tokenEntry', $tokens);
    $sent = count(array_filter($results, static function (array $r): bool {
        return $r['ok'];
    }));

    return ['ok' => $sent === count($results), 'sent' => $sent, 'failed' => count($results) - $sent, 'results' => $results];
}

/** A "wait": false multicast, answered as apnsd does (daemon multicast.go, queuedAnswer). */
function queuedMulticast(array $tokens): array
{
    $results = [];
    $queued = 0;
    foreach ($tokens as $raw) {
        $token = strtolower(preg_replace('/[<>\s]/', '', (string) $raw));
        if ($token === '' || strlen($token) % 2 !== 0 || !ctype_xdigit($token)) {
            $results[] = ['token' => $raw, 'ok' => false, 'error' => 'invalid_token', 'message' => 'token is not hex', 'retryable' => false];
            continue;
        }
        $hooked = retryHook($token);
        if ($hooked !== null) {
            $results[] = ['token' => $token] + $hooked;
            continue;
        }
        $results[] = ['token' => $token, 'ok' => true, 'queued' => true];
        ++$queued;
    }
    if ($queued === count($results)) {
        return ['ok' => true, 'queued' => $queued];
    }

    return ['ok' => false, 'queued' => $queued, 'sent' => 0, 'failed' => count($results) - $queued, 'results' => $results];
}

function channelOp(string $op, array $req): array
{
    global $channels;
    $key = ($req['app'] ?? '') . '/' . ($req['env'] ?? '');
    $channels[$key] = $channels[$key] ?? [];
    switch ($op) {
        case 'channel_create':
            $storage = $req['storage'] ?? null;
            if ($storage !== 'none' && $storage !== 'latest') {
                return ['ok' => false, 'error' => 'bad_request', 'message' => 'storage must be none or latest', 'retryable' => false];
            }
            $id = 'ch-' . (count($channels[$key]) + 1);
            $channels[$key][$id] = $storage;

            return ['ok' => true, 'channel_id' => $id];
        case 'channel_list':
            $ids = array_keys($channels[$key]);
            sort($ids);

            return ['ok' => true, 'channels' => $ids];
    }
    $id = $req['channel_id'] ?? null;
    if (!is_string($id) || !isset($channels[$key][$id])) {
        return ['ok' => false, 'status' => 404, 'reason' => 'ChannelNotFound'];
    }
    if ($op === 'channel_get') {
        return ['ok' => true, 'channel_id' => $id, 'storage' => $channels[$key][$id], 'push_type' => 'liveactivity'];
    }
    if ($op === 'channel_delete') {
        unset($channels[$key][$id]);

        return ['ok' => true];
    }

    return ['ok' => false, 'error' => 'unknown_op', 'message' => "unknown op $op", 'retryable' => false];
}
