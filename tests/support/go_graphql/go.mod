module agentwatch-tests/go_graphql

go 1.19
