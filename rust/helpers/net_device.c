// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/net_device.rs: the inline functions of
 * <linux/netdevice.h>, <linux/etherdevice.h>, <linux/skbuff.h> and
 * <linux/device.h> that the abstraction calls. (Helpers it shares with
 * rust/kernel/netdev.rs live in netdev.c.)
 */

#include <linux/device.h>
#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>

void *rust_helper_netdev_priv(const struct net_device *dev)
{
	return netdev_priv(dev);
}

void rust_helper_eth_hw_addr_set(struct net_device *dev, const u8 *addr)
{
	eth_hw_addr_set(dev, addr);
}

const char *rust_helper_dev_name(const struct device *dev)
{
	return dev_name(dev);
}

bool rust_helper_napi_schedule(struct napi_struct *n)
{
	return napi_schedule(n);
}

struct netdev_queue *rust_helper_netdev_get_tx_queue(const struct net_device *dev,
						     unsigned int index)
{
	return netdev_get_tx_queue(dev, index);
}

void rust_helper_netif_tx_stop_queue(struct netdev_queue *dev_queue)
{
	netif_tx_stop_queue(dev_queue);
}

bool rust_helper_netif_tx_queue_stopped(const struct netdev_queue *dev_queue)
{
	return netif_tx_queue_stopped(dev_queue);
}

void rust_helper_netif_tx_start_all_queues(struct net_device *dev)
{
	netif_tx_start_all_queues(dev);
}

void rust_helper_dev_kfree_skb_any(struct sk_buff *skb)
{
	dev_kfree_skb_any(skb);
}

void rust_helper_dev_consume_skb_any(struct sk_buff *skb)
{
	dev_consume_skb_any(skb);
}

u16 rust_helper_skb_get_queue_mapping(const struct sk_buff *skb)
{
	return skb_get_queue_mapping(skb);
}

void rust_helper_skb_record_rx_queue(struct sk_buff *skb, u16 rx_queue)
{
	skb_record_rx_queue(skb, rx_queue);
}

bool rust_helper_skb_is_nonlinear(const struct sk_buff *skb)
{
	return skb_is_nonlinear(skb);
}

unsigned int rust_helper_skb_headlen(const struct sk_buff *skb)
{
	return skb_headlen(skb);
}
