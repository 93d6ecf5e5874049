// Command coredns is CoreDNS with the plugins the local cluster's DNS uses
// (hack/cluster.sh: Services and pods under cluster.local, every other name
// answered NXDOMAIN at once, nothing forwarded off the machine). Built by
// hack/build-binaries.sh; the plugin order is CoreDNS's own (plugin.cfg).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "cache", "template", "kubernetes",
	}
}

func main() { coremain.Run() }
