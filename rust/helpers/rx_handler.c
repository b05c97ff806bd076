// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/rx_handler.rs: reads of sk_buff and net_device
 * fields that are bitfields, sit in anonymous unions or need
 * rcu_dereference(), which bindgen cannot express.
 */

#include <linux/if_packet.h>
#include <linux/if_vlan.h>
#include <linux/netdevice.h>
#include <linux/rcupdate.h>
#include <linux/skbuff.h>
#include <net/gso.h>

/* The rx_handler_data of the device that received @skb (caller: rx_handler). */
void *rust_helper_pcieoe_skb_rx_handler_data(const struct sk_buff *skb)
{
	return rcu_dereference(skb->dev->rx_handler_data);
}

/* Looped back by dev_loopback_xmit(): no link-layer header to read. */
bool rust_helper_pcieoe_skb_is_looped_back(const struct sk_buff *skb)
{
	return skb->pkt_type == PACKET_LOOPBACK;
}

/* Caller holds RTNL, under which reg_state leaves NETREG_REGISTERED. */
bool rust_helper_pcieoe_netdev_is_registered(const struct net_device *dev)
{
	return dev->reg_state == NETREG_REGISTERED;
}

/*
 * The VLAN tag held out of band (skb->vlan_proto, skb->vlan_tci: put there
 * by the hardware or by skb_vlan_untag() before the rx_handler runs), in
 * host byte order; false when there is none.
 */
bool rust_helper_pcieoe_skb_vlan_tag(const struct sk_buff *skb, u16 *proto,
				     u16 *tci)
{
	if (!skb_vlan_tag_present(skb))
		return false;
	*proto = ntohs(skb->vlan_proto);
	*tci = skb_vlan_tag_get(skb);
	return true;
}

/*
 * A frame whose checksum a local sender left to offload (a veth peer, a
 * tap): the bytes are not yet what the wire would carry.
 */
bool rust_helper_pcieoe_skb_csum_partial(const struct sk_buff *skb)
{
	return skb->ip_summed == CHECKSUM_PARTIAL;
}

/* Computes such a checksum in place; the caller owns @skb alone. */
int rust_helper_pcieoe_skb_csum_resolve(struct sk_buff *skb)
{
	return skb_checksum_help(skb);
}

bool rust_helper_pcieoe_skb_is_gso(const struct sk_buff *skb)
{
	return skb_is_gso(skb);
}

/*
 * The segments of a GSO frame (the caller owns @skb alone, skb->data past
 * its MAC header), linear and with their checksums computed, each with
 * skb->data at its MAC header; NULL on failure or for a fraglist frame.
 * @skb keeps its data and still starts past its MAC header; its headers
 * may have been made private and its L4 checksum field rewritten, which
 * the stack ignores for such a frame (CHECKSUM_PARTIAL or UNNECESSARY).
 */
struct sk_buff *rust_helper_pcieoe_skb_gso_split(struct sk_buff *skb)
{
	unsigned int mac = skb->data - skb_mac_header(skb);
	struct sk_buff *segs;

	/*
	 * A fraglist GRO frame is "segmented" by cutting its own list
	 * (skb_segment_list() returns @skb itself, changed): not for a frame
	 * the stack may still get.
	 */
	if (skb_shinfo(skb)->gso_type & SKB_GSO_FRAGLIST)
		return NULL;
	/*
	 * Segmenting rewrites the TCP/UDP checksum field of @skb's headers,
	 * which a clone (a tap) may share: make them ours.
	 */
	if (skb_unclone(skb, GFP_ATOMIC))
		return NULL;
	__skb_push(skb, mac);
	/* No features: no scatter-gather, no checksum offload. */
	segs = __skb_gso_segment(skb, 0, false);
	__skb_pull(skb, mac);
	if (IS_ERR_OR_NULL(segs) || segs == skb)
		return NULL;
	return segs;
}

struct sk_buff *rust_helper_pcieoe_skb_next(const struct sk_buff *skb)
{
	return skb->next;
}
