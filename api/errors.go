package api

import (
	"errors"
	"fmt"
	"net/http"
)

// FieldError is a validation failure of one field of a resource. Field is the
// JSON path of the offending value ("endpoints[2].address") so the CLI and
// the controller can point the user at it.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// StatusError is a non-2xx answer of the daemon, carrying its Error body.
type StatusError struct {
	Code int
	Body Error
}

func (e *StatusError) Error() string {
	msg := e.Body.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	if e.Body.Field != "" {
		msg = e.Body.Field + ": " + msg
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Code)
}

// IsNotFound reports whether err is (or wraps) a 404 from the daemon.
func IsNotFound(err error) bool { return hasCode(err, http.StatusNotFound) }

// IsConflict reports whether err is (or wraps) a 409 from the daemon.
func IsConflict(err error) bool { return hasCode(err, http.StatusConflict) }

// IsClientError reports whether err is (or wraps) a 4xx from the daemon: the
// request is wrong and retrying it unchanged will not help.
func IsClientError(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code >= 400 && se.Code < 500
}

func hasCode(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}
