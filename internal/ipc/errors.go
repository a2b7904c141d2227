package ipc

import (
	"errors"
	"fmt"
)

// Error codes of the protocol (docs/protocol.md, "Errors").
const (
	CodeBadJSON         = "bad_json"
	CodeLineTooLong     = "line_too_long"
	CodeBadRequest      = "bad_request"
	CodeUnknownOp       = "unknown_op"
	CodeInvalidToken    = "invalid_token"
	CodeUnknownApp      = "unknown_app"
	CodePayloadTooLarge = "payload_too_large"
	CodeQueueFull       = "queue_full"
	CodeTimeout         = "timeout"
	CodeUnavailable     = "unavailable"
	CodeShuttingDown    = "shutting_down"
	CodeReloadFailed    = "reload_failed"
	CodeForbidden       = "forbidden"
	CodeExpired         = "expired"
	CodeInternal        = "internal"
)

// retryable is the one table of which codes a client may send again as they
// are: true for the transient ones (the daemon or APNs is busy, away or
// stopping), false for those the same request would get again. Every code
// above has an entry (TestEveryCodeHasRetryable).
var retryable = map[string]bool{
	CodeBadJSON:         false,
	CodeLineTooLong:     false,
	CodeBadRequest:      false,
	CodeUnknownOp:       false,
	CodeInvalidToken:    false,
	CodeUnknownApp:      false,
	CodePayloadTooLarge: false,
	CodeQueueFull:       true,
	CodeTimeout:         true,
	CodeUnavailable:     true,
	CodeShuttingDown:    true,
	CodeReloadFailed:    false,
	CodeForbidden:       false,
	CodeExpired:         false,
	CodeInternal:        false,
}

// Retryable reports whether a refusal with code may be sent again unchanged.
// An unknown code is not retryable.
func Retryable(code string) bool { return retryable[code] }

// Error is a refusal by apnsd itself (as opposed to an answer from APNs).
type Error struct {
	Code    string
	Message string
	// Retryable is Retryable(Code) for errors made here; for an error
	// rebuilt from an answer (Response.Err) it is what the daemon said.
	Retryable bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an *Error; whether it is retryable follows from code.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: Retryable(code)}
}

// ErrorResponse turns err into a response. A non-*Error becomes "internal".
func ErrorResponse(err error) *Response {
	var e *Error
	if !errors.As(err, &e) {
		e = Errorf(CodeInternal, "%s", err.Error())
	}
	r := e.Retryable
	return &Response{Error: e.Code, Message: e.Message, Retryable: &r}
}
