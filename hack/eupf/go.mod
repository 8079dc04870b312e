module github.com/telcolb/telcolb/hack/eupf

go 1.26

require github.com/edgecomllc/eupf v0.7.1
