package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is an OpenAI-style error: the body {"error": {"message", "type", "param", "code"}}
// that OpenAI's clients parse (and vLLM's, whose ErrorResponse carries the same fields), with the
// HTTP status it is sent with.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// badRequest is a 400 naming the request field at fault (param) and saying how to fix it.
func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: strPtr(param),
		Message: fmt.Sprintf(format, args...)}
}

func notFound(param, code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "not_found_error", Param: strPtr(param), Code: strPtr(code),
		Message: fmt.Sprintf(format, args...)}
}

// errQueueFull is the 429 of a full request queue.
func errQueueFull(limit int) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: strPtr("queue_full"),
		Message: fmt.Sprintf("the server's request queue is full (%d requests waiting): retry later", limit)}
}

// errUnavailable is the 503 of a server that is loading its model (code not_ready) or shutting
// down (code shutting_down).
func errUnavailable(code, message string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "service_unavailable_error", Code: strPtr(code), Message: message}
}

func errInternal(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"encoding the response failed","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
