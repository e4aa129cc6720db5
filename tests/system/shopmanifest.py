"""shopmanifest.py - the part of a shop manifest (apps/shop/shop.yaml's shape) that the shop's
system tests share: a 3-node keel cluster and two instances each of inventory, payment and
order, on ports the test chose. Each test appends the services it needs beyond these."""


def core_services(base, port, payment_args=""):
    """YAML text: the cluster at base, inventory at port, payment at port + 10 (with
    payment_args, e.g. ', --slow-ms, "500"', added to its command), order at port + 20."""
    return f"""
cluster:
  nodes: 3
  base_port: {base}
services:
  - name: inventory
    run: [keel-shop-inventory, --keel, "{{keel}}", --registry, "{{keel}}",
          --listen, "127.0.0.1:{{port}}", --id, "inventory-{{i}}"]
    instances: 2
    port: {port}
  - name: payment
    run: [keel-shop-payment, --keel, "{{keel}}", --registry, "{{keel}}",
          --db, "{{dir}}/payment.db", --listen, "127.0.0.1:{{port}}", --id, "payment-{{i}}"{payment_args}]
    instances: 2
    port: {port + 10}
  - name: order
    run: [keel-shop-order, --keel, "{{keel}}", --registry, "{{keel}}",
          --listen, "127.0.0.1:{{port}}", --id, "order-{{i}}"]
    instances: 2
    port: {port + 20}
"""
