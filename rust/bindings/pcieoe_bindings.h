/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers the pcieoe abstractions need beyond 6.12's bindings_helper.h.
 * Included at the end of rust/bindings/bindings_helper.h by
 * scripts/kernel-additions.
 */
#include <linux/configfs.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/interrupt.h>
#include <linux/ioport.h>
#include <linux/irq.h>
#include <linux/irqdomain.h>
#include <linux/miscdevice.h>
#include <linux/moduleparam.h>
#include <linux/netdevice.h>
#include <linux/numa.h>
#include <linux/pci.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/skbuff.h>
#include <net/net_namespace.h>

/*
 * Exported (EXPORT_SYMBOL_GPL) but declared only in drivers/pci/pci.h, which
 * is private to drivers/pci: the same declaration as there (6.12).
 */
int pci_hp_add_bridge(struct pci_dev *dev);
#include <linux/dma-map-ops.h>
#include <linux/scatterlist.h>
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/ethtool.h>
#include <linux/rtnetlink.h>
#include <linux/falloc.h>
