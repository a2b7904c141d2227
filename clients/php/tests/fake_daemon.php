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
 * appended to LOGFILE as "<connection number>\t<line>".
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
    while (true) {
        if ($answered >= $limit && $after === 'close') {
            return;
        }
        $line = fgets($conn);
        if ($line === false) {
            return; // EOF
        }
        fwrite($log, $connNo . "\t" . rtrim($line, "\n") . "\n");
        fflush($log);
        if (trim($line) === '') {
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
