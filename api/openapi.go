package api

import _ "embed"

// OpenAPI is the OpenAPI 3.0 description of the daemon's REST API, served at
// /openapi.yaml. Embedding it keeps the served document and the one in the
// repository identical.
//
//go:embed openapi.yaml
var OpenAPI []byte
