// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/blk_device.rs: the inline functions and macros
 * of <linux/blk-mq.h>, <linux/blkdev.h> and <linux/scatterlist.h> that the
 * abstraction calls.
 */

#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/scatterlist.h>

struct gendisk *rust_helper_blk_mq_alloc_disk(struct blk_mq_tag_set *set,
					      struct queue_limits *lim,
					      void *queuedata)
{
	return blk_mq_alloc_disk(set, lim, queuedata);
}

struct request *rust_helper_blk_mq_tag_to_rq(struct blk_mq_tags *tags,
					     unsigned int tag)
{
	return blk_mq_tag_to_rq(tags, tag);
}

int rust_helper_blk_mq_request_started(struct request *rq)
{
	return blk_mq_request_started(rq);
}

int rust_helper_blk_rq_map_sg(struct request_queue *q, struct request *rq,
			      struct scatterlist *sglist)
{
	return blk_rq_map_sg(q, rq, sglist);
}

sector_t rust_helper_blk_rq_pos(const struct request *rq)
{
	return blk_rq_pos(rq);
}

unsigned int rust_helper_blk_rq_bytes(const struct request *rq)
{
	return blk_rq_bytes(rq);
}

unsigned int rust_helper_blk_rq_nr_phys_segments(struct request *rq)
{
	return blk_rq_nr_phys_segments(rq);
}

/* The operation (enum req_op) as a plain number. */
unsigned int rust_helper_pcieoe_rq_op(const struct request *rq)
{
	return (__force unsigned int)req_op(rq);
}

bool rust_helper_pcieoe_rq_fua(const struct request *rq)
{
	return rq->cmd_flags & REQ_FUA;
}

dma_addr_t rust_helper_pcieoe_sg_dma_address(struct scatterlist *sg)
{
	return sg_dma_address(sg);
}

unsigned int rust_helper_pcieoe_sg_dma_len(struct scatterlist *sg)
{
	return sg_dma_len(sg);
}
