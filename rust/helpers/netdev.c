// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/netdev.rs: the inline functions of
 * <linux/netdevice.h> and <linux/skbuff.h> that the abstraction calls.
 */

#include <linux/netdevice.h>
#include <linux/skbuff.h>

void rust_helper_dev_hold(struct net_device *dev)
{
	dev_hold(dev);
}

void rust_helper_dev_put(struct net_device *dev)
{
	dev_put(dev);
}

bool rust_helper_netif_running(const struct net_device *dev)
{
	return netif_running(dev);
}

bool rust_helper_netif_carrier_ok(const struct net_device *dev)
{
	return netif_carrier_ok(dev);
}

struct sk_buff *rust_helper_alloc_skb(unsigned int size, gfp_t priority)
{
	return alloc_skb(size, priority);
}

void rust_helper_skb_reserve(struct sk_buff *skb, int len)
{
	skb_reserve(skb, len);
}

void *rust_helper_skb_put_data(struct sk_buff *skb, const void *data,
			       unsigned int len)
{
	return skb_put_data(skb, data, len);
}

void rust_helper_skb_reset_mac_header(struct sk_buff *skb)
{
	skb_reset_mac_header(skb);
}

void rust_helper_skb_set_network_header(struct sk_buff *skb, const int offset)
{
	skb_set_network_header(skb, offset);
}

struct sk_buff *rust_helper_skb_share_check(struct sk_buff *skb, gfp_t pri)
{
	return skb_share_check(skb, pri);
}

int rust_helper_skb_linearize(struct sk_buff *skb)
{
	return skb_linearize(skb);
}

bool rust_helper_skb_mac_header_was_set(const struct sk_buff *skb)
{
	return skb_mac_header_was_set(skb);
}

unsigned char *rust_helper_skb_mac_header(const struct sk_buff *skb)
{
	return skb_mac_header(skb);
}

unsigned char *rust_helper_skb_tail_pointer(const struct sk_buff *skb)
{
	return skb_tail_pointer(skb);
}

void rust_helper_kfree_skb(struct sk_buff *skb)
{
	kfree_skb(skb);
}

void rust_helper_consume_skb(struct sk_buff *skb)
{
	consume_skb(skb);
}

/*
 * Stores to sk_buff fields that sit in anonymous unions and struct groups,
 * which bindgen names unstably.
 */
void rust_helper_pcieoe_skb_set_dev(struct sk_buff *skb, struct net_device *dev)
{
	skb->dev = dev;
}

void rust_helper_pcieoe_skb_set_protocol(struct sk_buff *skb, __be16 protocol)
{
	skb->protocol = protocol;
}
